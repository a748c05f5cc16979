//! Canonical names: what a cmdlet or parameter name may look like, and how two names compare.
//!
//! Names are plain ASCII (`[A-Za-z0-9-]`) and compared ASCII-case-insensitively. Anything else —
//! a Cyrillic `а` that looks like a Latin `a`, a fullwidth letter, a zero-width joiner, a space —
//! is refused with a reason naming the character, never normalised into a match. There is no
//! prefix abbreviation (`Ident` is not `Identity`) and there are no aliases.

/// PowerShell's common parameters. They are not special to the policy: like any parameter
/// they are refused unless a cmdlet entry lists them. The list only improves the reason text.
pub const COMMON_PARAMETERS: &[&str] = &[
    "Verbose",
    "Debug",
    "ErrorAction",
    "WarningAction",
    "InformationAction",
    "ProgressAction",
    "ErrorVariable",
    "WarningVariable",
    "InformationVariable",
    "OutVariable",
    "OutBuffer",
    "PipelineVariable",
    "WhatIf",
    "Confirm",
];

/// Longest cmdlet or parameter name accepted (Exchange's longest are about 40 characters).
pub const MAX_NAME_LEN: usize = 128;

fn describe(c: char) -> String {
    if c.is_ascii_graphic() {
        format!("'{c}'")
    } else {
        format!("U+{:04X}", c as u32)
    }
}

fn check_chars(what: &str, name: &str, allowed: impl Fn(char) -> bool) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} name is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "{what} name is {} bytes long; at most {MAX_NAME_LEN} are accepted",
            name.len()
        ));
    }
    if let Some((at, c)) = name.char_indices().find(|&(_, c)| !allowed(c)) {
        let hint = if c.is_ascii() {
            ""
        } else {
            " (a non-ASCII character: lookalikes are never treated as ASCII letters)"
        };
        return Err(format!(
            "{what} name {:?} has the character {} at byte {at}{hint}; only ASCII letters, digits and '-' are accepted",
            name.escape_debug().to_string(),
            describe(c),
        ));
    }
    Ok(())
}

/// Checks that `name` looks like `Verb-Noun` in plain ASCII.
pub fn validate_cmdlet(name: &str) -> Result<(), String> {
    check_chars("cmdlet", name, |c| c.is_ascii_alphanumeric() || c == '-')?;
    match name.split_once('-') {
        Some((verb, noun))
            if !verb.is_empty()
                && verb.chars().all(|c| c.is_ascii_alphabetic())
                && !noun.is_empty()
                && !noun.contains('-') =>
        {
            Ok(())
        }
        _ => Err(format!(
            "cmdlet name {name:?} is not of the form Verb-Noun (one '-', a verb of letters, a noun)"
        )),
    }
}

/// Checks a parameter (or hashtable key) name: ASCII letters and digits, starting with a letter.
pub fn validate_parameter(name: &str) -> Result<(), String> {
    if let Some(rest) = name.strip_prefix('-') {
        return Err(format!(
            "parameter name {:?} starts with '-'; give it as {:?}",
            for_record(name),
            for_record(rest)
        ));
    }
    check_chars("parameter", name, |c| c.is_ascii_alphanumeric())?;
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(format!(
            "parameter name {name:?} does not start with a letter"
        ));
    }
    Ok(())
}

/// `name` as a refusal may record or quote it: whole when it is at most [`MAX_NAME_LEN`] bytes,
/// else cut there (at a character boundary) with its length appended. A guest must not be able
/// to write megabytes into the audit trail, or into an error, through a name it was refused.
pub fn for_record(name: &str) -> String {
    cut(name, MAX_NAME_LEN)
}

/// `text` whole when it is at most `max` bytes, else its first `max` bytes (at a character
/// boundary) with its length appended: how guest text is bounded wherever it is quoted.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// True when two valid names are the same name.
pub fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// A parameter name as PowerShell's binder could take it, for deciding what is a secret: blanks,
/// its dash (`-`, and the en dash, em dash and horizontal bar PowerShell also accepts) and a
/// trailing `:` (`-Name:value`) left out. A guest's name so spelled is refused, but its value
/// may still be recorded, and must be hashed if the name is a secret's.
pub fn as_bound(name: &str) -> &str {
    name.trim()
        .trim_start_matches(['-', '\u{2013}', '\u{2014}', '\u{2015}'])
        .trim_end_matches(':')
        .trim()
}

/// True for names the audit must hash whatever the policy says: anything that looks like a
/// password, secret, token or credential, and every parameter some cmdlet takes as a
/// SecureString or PSCredential ([`crate::secure`]: `OAuthCode` looks like none of those),
/// spelled any way [`as_bound`] undoes.
pub fn sensitive_by_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    ["password", "secret", "token", "credential"]
        .iter()
        .any(|word| lower.contains(word))
        || crate::secure::is_secure_parameter_name(as_bound(name))
}

/// True when `name` is one of PowerShell's common parameters.
pub fn is_common_parameter(name: &str) -> bool {
    COMMON_PARAMETERS.iter().any(|c| same(c, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_name_is_one_however_it_is_spelled_for_the_binder() {
        for name in [
            "OAuthCode",
            "-OAuthCode",
            "\u{2014}oauthcode",
            " OAuthCode: ",
            "-password",
        ] {
            assert!(sensitive_by_name(name), "{name:?}");
        }
        assert_eq!(as_bound(" -Notes: "), "Notes");
        assert_eq!(as_bound("\u{2013}Notes"), "Notes");
        for name in ["-", ":", " ", "-Room", "DisplayName:"] {
            assert!(!sensitive_by_name(name), "{name:?}");
        }
    }

    #[test]
    fn cmdlet_names() {
        assert!(validate_cmdlet("Get-Mailbox").is_ok());
        assert!(validate_cmdlet("Get-EXOMailbox").is_ok());
        for bad in [
            "",
            "Get",
            "-Mailbox",
            "Get-",
            "Get-Mail-box",
            " Get-Mailbox",
            "Get-Mailbox ",
            "G\u{0435}t-Mailbox",
            "Get-Mailbox\u{200b}",
            "\u{ff27}et-Mailbox",
            "Get_Mailbox",
            "Microsoft.Exchange\\Get-Mailbox",
        ] {
            assert!(validate_cmdlet(bad).is_err(), "{bad:?}");
        }
        let why = validate_cmdlet("G\u{0435}t-Mailbox").unwrap_err();
        assert!(why.contains("U+0435"), "{why}");
    }

    #[test]
    fn long_names_are_cut_for_the_record() {
        assert_eq!(for_record("Get-Mailbox"), "Get-Mailbox");
        let long = format!("Get-{}", "\u{e9}".repeat(1000));
        let cut = for_record(&long);
        assert!(cut.len() < MAX_NAME_LEN + 32, "{cut}");
        assert!(cut.ends_with("… (2004 bytes)"), "{cut}");
    }

    #[test]
    fn parameter_names() {
        assert!(validate_parameter("Identity").is_ok());
        assert!(validate_parameter("-Identity").unwrap_err().contains("'-'"));
        assert!(validate_parameter("Ident ity").is_err());
        assert!(validate_parameter("1dentity").is_err());
        assert!(validate_parameter("Identit\u{0443}").is_err());
    }
}
