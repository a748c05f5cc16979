//! Where a browser goes after signing in: a path on this service, never another site.
//!
//! An open redirect lets a phishing link borrow our name (`/signin?return_to=//evil.example`).
//! Browsers are generous in what they take as "another host": `//host`, `/\host`, `\\host`,
//! a tab or newline inside `//` (stripped before parsing), a scheme, and any of these
//! percent-encoded once or more if some layer decodes before the browser. So the rule is
//! positive and checked on the text as given and on every percent-decoding of it: printable
//! ASCII only, one leading `/`, no `\`, no `//` anywhere in the path, and it must resolve to
//! our own origin.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use url::Url;

/// The longest accepted return path.
pub const MAX_RETURN_TO: usize = 2048;

/// How many rounds of percent-decoding are checked (each must pass); more nesting than this is
/// refused outright.
const DECODE_ROUNDS: usize = 4;

/// `Some(path)` when `candidate` is a local path safe to redirect to (returned as given),
/// `None` otherwise.
pub fn local_path(candidate: &str) -> Option<&str> {
    if candidate.is_empty() || candidate.len() > MAX_RETURN_TO {
        return None;
    }
    let mut text: Cow<'_, str> = Cow::Borrowed(candidate);
    for _ in 0..DECODE_ROUNDS {
        if !is_plain_local_path(&text) {
            return None;
        }
        let decoded = percent_decode_str(&text).decode_utf8().ok()?;
        if decoded == text {
            return Some(candidate);
        }
        text = Cow::Owned(decoded.into_owned());
    }
    None
}

/// One round of the rule, on text that may still hold percent-escapes.
fn is_plain_local_path(text: &str) -> bool {
    let path = text.split(['?', '#']).next().unwrap_or_default();
    text.bytes().all(|b| b.is_ascii_graphic())
        && path.starts_with('/')
        && !path.contains("//")
        && !text.contains('\\')
        && resolves_to_our_origin(text)
}

/// Belt and braces: a WHATWG URL parser (the browsers' rules) keeps it on our origin.
fn resolves_to_our_origin(text: &str) -> bool {
    let base = Url::parse("https://warden.invalid/").expect("a valid base URL");
    base.join(text)
        .is_ok_and(|joined| joined.origin() == base.origin() && joined.username().is_empty())
}

#[cfg(test)]
mod tests {
    use super::local_path;

    /// Each row: the text, and whether it is accepted.
    const CASES: &[(&str, bool)] = &[
        ("/", true),
        ("/runs", true),
        ("/runs/7d1c4a52-1b6c-4f0e-9d1e-0a6f1b2c3d4e", true),
        ("/tasks/rename-mailbox?identity=alice%40contoso.com", true),
        ("/runs?view=mine#top", true),
        ("/a%20b", true),
        ("/approvals?next=%2Fruns", true), // the query does not move the browser
        // other hosts, every spelling
        ("//evil.example", false),
        ("//evil.example/path", false),
        ("///evil.example", false),
        ("/\\evil.example", false),
        ("\\\\evil.example", false),
        ("\\/evil.example", false),
        ("/\t/evil.example", false),
        ("/\n/evil.example", false),
        ("/ /evil.example", false),
        ("/%09/evil.example", false),
        ("/%0a/evil.example", false),
        ("/%2F%2Fevil.example", false),
        ("/%2f/evil.example", false),
        ("/%5Cevil.example", false),
        ("/%5cevil.example", false),
        ("%2F%2Fevil.example", false),
        ("/%252F%252Fevil.example", false),
        ("/%25252F%25252Fevil.example", false),
        ("/%2525252F%2525252Fevil.example", false),
        ("/.//evil.example", false),
        ("/x//evil.example", false),
        // schemes and relative forms
        ("https://evil.example", false),
        ("http:evil.example", false),
        ("http:/evil.example", false),
        ("javascript:alert(1)", false),
        ("JaVaScRiPt:alert(1)", false),
        ("data:text/html,<script>", false),
        ("evil.example", false),
        ("runs", false),
        ("?x=1", false),
        ("#top", false),
        ("", false),
        // userinfo and odd bytes
        ("/@evil.example", true), // a path segment on our host: harmless
        ("/%00", false),
        ("/%ff", false),
        ("/r\u{e9}sum\u{e9}", false),
        ("/\u{2215}\u{2215}evil.example", false), // DIVISION SLASH
        ("/\u{ff0f}evil.example", false),         // FULLWIDTH SOLIDUS
    ];

    #[test]
    fn only_local_paths_are_accepted_as_return_targets() {
        let wrong: Vec<_> = CASES
            .iter()
            .filter(|(text, ok)| local_path(text).is_some() != *ok)
            .collect();
        assert!(wrong.is_empty(), "misjudged: {wrong:?}");
    }

    #[test]
    fn an_accepted_path_is_returned_unchanged() {
        assert_eq!(local_path("/runs?view=mine"), Some("/runs?view=mine"));
    }

    #[test]
    fn an_over_long_path_is_refused() {
        let long = format!("/{}", "a".repeat(super::MAX_RETURN_TO));
        assert_eq!(local_path(&long), None);
        let just = format!("/{}", "a".repeat(super::MAX_RETURN_TO - 1));
        assert!(local_path(&just).is_some());
    }
}
