//! OPATH filters (`-Filter`, `-RecipientFilter`, …): which properties one names.
//!
//! A filter is a predicate over properties, so it answers for a property the role's `output`
//! shaping hides (`HiddenFromAddressListsEnabled -eq $true` tells which mailboxes are hidden).
//! The policy parses the filter and refuses it when it names a property it may not use. The
//! grammar is the subset Exchange documents and nothing else, so anything this parser does not
//! understand is refused rather than guessed at:
//!
//! ```text
//! filter     = or
//! or         = and { "-or" and }
//! and        = unary { "-and" unary }
//! unary      = "-not" unary | "(" or ")" | comparison
//! comparison = PROPERTY OPERATOR value
//! OPERATOR   = -eq -ne -like -notlike -lt -gt -le -ge      (any case)
//! value      = 'text' | "text" (a doubled quote escapes) | $true | $false | $null | bare word
//! PROPERTY   = an ASCII letter, then ASCII letters, digits or '_'
//! ```
//! Tokens are those of [`warden_vocab::opath`] (the REST client rewrites `$true`/`$false` by the
//! same reading, so what is sent is what was judged), which also refuses every character
//! outside printable ASCII and the backtick; parentheses nest at most [`MAX_DEPTH`] deep.

use crate::names;
use warden_vocab::opath::{self, TokenKind as Tok};

/// Deepest nesting of parentheses and `-not` accepted.
pub(crate) const MAX_DEPTH: usize = 32;

const OPERATORS: &[&str] = &["eq", "ne", "like", "notlike", "lt", "gt", "le", "ge"];

struct Parser {
    toks: Vec<Tok>,
    at: usize,
    properties: Vec<String>,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Tok::Dash(w)) if w == word)
    }

    fn or(&mut self, depth: usize) -> Result<(), String> {
        self.and(depth)?;
        while self.keyword("or") {
            self.at += 1;
            self.and(depth)?;
        }
        Ok(())
    }

    fn and(&mut self, depth: usize) -> Result<(), String> {
        self.unary(depth)?;
        while self.keyword("and") {
            self.at += 1;
            self.unary(depth)?;
        }
        Ok(())
    }

    fn unary(&mut self, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("the filter nests deeper than {MAX_DEPTH} levels"));
        }
        if self.keyword("not") {
            self.at += 1;
            return self.unary(depth + 1);
        }
        if self.peek() == Some(&Tok::LParen) {
            self.at += 1;
            self.or(depth + 1)?;
            if self.peek() != Some(&Tok::RParen) {
                return Err("a '(' is not closed".into());
            }
            self.at += 1;
            return Ok(());
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<(), String> {
        let Some(Tok::Word(property)) = self.peek().cloned() else {
            return Err(format!("expected a property at token {}", self.at + 1));
        };
        let plain = property.starts_with(|c: char| c.is_ascii_alphabetic())
            && property
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain {
            return Err(format!(
                "{:?} is not a plain property name (ASCII letters, digits, '_')",
                names::for_record(&property)
            ));
        }
        self.at += 1;
        match self.peek() {
            Some(Tok::Dash(op)) if OPERATORS.contains(&op.as_str()) => self.at += 1,
            Some(Tok::Dash(op)) => {
                return Err(format!(
                    "-{} is not an accepted operator (-eq -ne -like -notlike -lt -gt -le -ge)",
                    names::for_record(op)
                ));
            }
            _ => return Err(format!("expected an operator after {property}")),
        }
        match self.peek() {
            Some(Tok::Quoted | Tok::Bool(_) | Tok::Null | Tok::Word(_)) => self.at += 1,
            _ => return Err(format!("expected a value after {property}'s operator")),
        }
        self.properties.push(property);
        Ok(())
    }
}

/// The properties an OPATH filter names, in order of appearance; an error when it is not a
/// filter of the grammar above. Reasons quote property names and operators (cut to
/// [`names::MAX_NAME_LEN`]), never values.
pub(crate) fn properties(filter: &str) -> Result<Vec<String>, String> {
    let toks = opath::tokens(filter).map_err(|e| e.to_string())?;
    let mut parser = Parser {
        toks: toks.into_iter().map(|t| t.kind).collect(),
        at: 0,
        properties: Vec::new(),
    };
    if parser.toks.is_empty() {
        return Err("the filter is empty".into());
    }
    parser.or(0)?;
    if parser.at != parser.toks.len() {
        return Err(format!(
            "unexpected text at token {} (a filter is comparisons joined by -and / -or)",
            parser.at + 1
        ));
    }
    Ok(parser.properties)
}

/// True for parameters that take an OPATH filter: `Filter`, `RecipientFilter`,
/// `ContentFilter`, `RecipientPreviewFilter`, … (any name ending in `Filter`).
pub(crate) fn is_filter_parameter(name: &str) -> bool {
    name.len()
        .checked_sub(6)
        .and_then(|start| name.get(start..))
        .is_some_and(|tail| tail.eq_ignore_ascii_case("filter"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_property() {
        let p = properties(
            "(DisplayName -like 'a*' -or -not(PrimarySmtpAddress -eq \"x\"\"y\")) -and Hidden -eq $TRUE",
        )
        .unwrap();
        assert_eq!(p, ["DisplayName", "PrimarySmtpAddress", "Hidden"]);
        assert_eq!(properties("Count -ge 5").unwrap(), ["Count"]);
        assert_eq!(
            properties("RecipientTypeDetails -eq UserMailbox").unwrap(),
            ["RecipientTypeDetails"]
        );
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        for bad in [
            "",
            "Name",
            "Name -eq",
            "Name -contains 'x'",
            "Name -ceq 'x'",
            "Name -eq 'x",
            "(Name -eq 'x'",
            "Name -eq 'x')",
            "Name -eq $x",
            "Name -eq 'x' Other -eq 'y'",
            "{Name -eq 'x'}",
            "Na.me -eq 'x'",
            "'Name' -eq 'x'",
            "Name -eq 'x' -and",
            "Name - eq 'x'",
            // Read as one value here, as three comparisons by PowerShell's tokeniser.
            "Name -eq 'x\u{2019} -or HiddenFromAddressListsEnabled -eq $true -or Name -eq \u{2018}y'",
            "Name -eq \"x\u{201D} -or Hidden -eq $true -or Name -eq \u{201C}y\"",
            "Name -eq 'x\u{201B} -or Hidden -eq 1 -or Name -eq \u{201A}y'",
            "Name \u{2013}eq 'x'",
            "Name \u{2014}eq 'x'",
            "Name -eq \"x`\" -or Hidden -eq 1 -or Name -eq `\"y\"",
            "Name -eq 'M\u{fc}ller'",
            "Name -eq 'x\ty'",
        ] {
            assert!(properties(bad).is_err(), "{bad:?}");
        }
        let deep = format!("{}a -eq 1{}", "(".repeat(40), ")".repeat(40));
        assert!(properties(&deep).unwrap_err().contains("deeper"));
        let nots = format!("{}a -eq 1", "-not ".repeat(100_000));
        assert!(properties(&nots).is_err());
    }

    #[test]
    fn filter_parameters_by_name() {
        for yes in [
            "Filter",
            "RecipientFilter",
            "contentfilter",
            "RecipientPreviewFilter",
        ] {
            assert!(is_filter_parameter(yes), "{yes}");
        }
        for no in ["Identity", "Filters", "ilter"] {
            assert!(!is_filter_parameter(no), "{no}");
        }
    }
}
