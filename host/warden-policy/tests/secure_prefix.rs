//! A SecureString parameter named by a prefix (`Pass` for `Password`, which PowerShell's binder
//! accepts) is that parameter: the policy refuses the abbreviation and names the full name.

fn load(parameters: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(
        &path,
        format!(
            "version = 1\n[roles.reset]\n[[roles.reset.cmdlet]]\nname = \"Set-Mailbox\"\n\
             [roles.reset.cmdlet.parameters]\n{parameters}\n[[grant]]\n\
             script_inline_sha256 = \"{}\"\nroles = [\"reset\"]\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    warden_policy::Policy::load(&path)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn a_prefix_of_a_secure_parameter_is_refused_naming_the_full_name() {
    for spelling in ["Pass", "pASSw", "RoomMailboxPass"] {
        for constraint in ["{ any = true }", "{ any = true, sensitive = true }"] {
            let why = load(&format!("{spelling} = {constraint}")).unwrap_err();
            assert!(
                why.contains("abbreviation")
                    && (why.contains("write it as Password")
                        || why.contains("write it as RoomMailboxPassword")),
                "{spelling}: {why}"
            );
        }
    }
    load("Password = { any = true, sensitive = true }").unwrap();
    // A name that is no prefix of a secure parameter is untouched.
    load("DisplayName = { any = true }").unwrap();
}
