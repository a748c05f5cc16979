//! OPATH filter text (`-Filter`, `-RecipientFilter`, …) cut into tokens: the one reading of a
//! filter that the policy judges it by and the REST client rewrites its booleans by, so the
//! comparisons sent are the ones judged.
//!
//! ```text
//! token = "(" | ")" | -word (an operator or -and/-or/-not, any case)
//!       | 'text' | "text" (a doubled quote escapes) | $true | $false | $null
//!       | a bare word (anything up to a space, a parenthesis or a quote)
//! ```
//!
//! A filter holds only printable ASCII without a backtick. PowerShell, and the parsers
//! modelled on it, also close a single-quoted string on U+2018–U+201B, read U+201C–U+201E as
//! double quotes, U+2013–U+2015 as a dash and a backtick as an escape; text this lexer read as
//! one quoted value could then be a comparison for Exchange
//! (`Name -eq 'x’ -or HiddenFromAddressListsEnabled -eq $true -or Name -eq ‘y'`), and a `$true`
//! it read outside a string could be inside one. Refusing every character outside that set is
//! one rule with no list to keep up to date.

use std::fmt;
use std::ops::Range;

/// What one token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    /// `(`.
    LParen,
    /// `)`.
    RParen,
    /// `-word`, lowercased: an operator or a logical keyword.
    Dash(String),
    /// A quoted string.
    Quoted,
    /// `$true` or `$false` (any case).
    Bool(bool),
    /// `$null` (any case).
    Null,
    /// A property or a bare-word value.
    Word(String),
}

/// One token and the bytes of the filter it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// What it is.
    pub kind: TokenKind,
    /// Where it is in the filter (byte offsets).
    pub span: Range<usize>,
}

/// Why a filter cannot be cut into tokens. Its text names a byte offset and a code point,
/// never the filter's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError(String);

impl fmt::Display for LexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LexError {}

/// The tokens of `filter`, in order; an error for a character outside printable ASCII or a
/// backtick, a quote never closed, a lone `-`, or a variable other than `$true`, `$false` and
/// `$null`.
pub fn tokens(filter: &str) -> Result<Vec<Token>, LexError> {
    if let Some((at, c)) = filter
        .char_indices()
        .find(|&(_, c)| !(' '..='~').contains(&c) || c == '`')
    {
        return Err(LexError(format!(
            "the filter holds U+{:04X} at byte {at}; a filter may hold only printable ASCII without a backtick (PowerShell reads typographic quotes, dashes and backticks as syntax)",
            c as u32
        )));
    }
    // Printable ASCII only from here: a byte is a character.
    let bytes = filter.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    let word_end = |from: usize, part: fn(u8) -> bool| {
        from + bytes[from..].iter().take_while(|&&b| part(b)).count()
    };
    while at < bytes.len() {
        let start = at;
        let kind = match bytes[at] {
            b' ' => {
                at += 1;
                continue;
            }
            b'(' => {
                at += 1;
                TokenKind::LParen
            }
            b')' => {
                at += 1;
                TokenKind::RParen
            }
            quote @ (b'\'' | b'"') => {
                at += 1;
                loop {
                    match bytes.get(at) {
                        None => {
                            return Err(LexError(format!(
                                "the quote at byte {start} is never closed"
                            )));
                        }
                        Some(&q) if q == quote => {
                            at += 1;
                            if bytes.get(at) != Some(&quote) {
                                break;
                            }
                            at += 1;
                        }
                        Some(_) => at += 1,
                    }
                }
                TokenKind::Quoted
            }
            b'-' => {
                at = word_end(at + 1, |b| b.is_ascii_alphanumeric());
                if at == start + 1 {
                    return Err(LexError(format!("a lone '-' at byte {start}")));
                }
                TokenKind::Dash(filter[start + 1..at].to_ascii_lowercase())
            }
            b'$' => {
                // A PowerShell variable name runs on through letters, digits and '_':
                // `$true_x` is a variable, never `$true` followed by text.
                at = word_end(at + 1, |b| b.is_ascii_alphanumeric() || b == b'_');
                match filter[start + 1..at].to_ascii_lowercase().as_str() {
                    "true" => TokenKind::Bool(true),
                    "false" => TokenKind::Bool(false),
                    "null" => TokenKind::Null,
                    _ => {
                        return Err(LexError(format!(
                            "only $true, $false and $null are accepted, not the variable at byte {start}"
                        )));
                    }
                }
            }
            _ => {
                at = word_end(at, |b| !matches!(b, b' ' | b'(' | b')' | b'\'' | b'"'));
                TokenKind::Word(filter[start..at].to_owned())
            }
        };
        out.push(Token {
            kind,
            span: start..at,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(filter: &str) -> Vec<TokenKind> {
        tokens(filter)
            .unwrap()
            .into_iter()
            .map(|t| t.kind)
            .collect()
    }

    #[test]
    fn reads_each_token_with_its_span() {
        use TokenKind::*;
        assert_eq!(
            kinds("(A -EQ 'it''s')-and B -ne \"x\"\"y\" -or C -eq $TRUE -or D -eq $null"),
            [
                LParen,
                Word("A".into()),
                Dash("eq".into()),
                Quoted,
                RParen,
                Dash("and".into()),
                Word("B".into()),
                Dash("ne".into()),
                Quoted,
                Dash("or".into()),
                Word("C".into()),
                Dash("eq".into()),
                Bool(true),
                Dash("or".into()),
                Word("D".into()),
                Dash("eq".into()),
                Null,
            ]
        );
        // No space is needed between an operator and its value, nor between two strings.
        let t = tokens("A -eq$false").unwrap();
        assert_eq!(t[1].kind, Dash("eq".into()));
        assert_eq!((t[2].kind.clone(), t[2].span.clone()), (Bool(false), 5..11));
        assert_eq!(kinds("A -eq 'x'$true")[2..], [Quoted, Bool(true)]);
        assert_eq!(
            kinds("A -eq x$true"),
            [Word("A".into()), Dash("eq".into()), Word("x$true".into())]
        );
    }

    #[test]
    fn refuses_what_powershell_would_read_otherwise() {
        for bad in [
            "A -eq 'x",
            "A - eq 1",
            "A -eq $x",
            "A -eq $true_x",
            "A -eq ${true}",
            "A -eq 'x\u{2019} -or B -eq $true'",
            "A -eq \"x`\" $true\"",
            "A -eq 'x\ty'",
        ] {
            assert!(tokens(bad).is_err(), "{bad:?}");
        }
        assert!(
            tokens("A -eq 'M\u{fc}ller'")
                .unwrap_err()
                .to_string()
                .contains("U+00FC at byte 8")
        );
    }
}
