//! A useful subset of OPATH, the language of `-Filter`: comparisons `-eq -ne -like -notlike`,
//! `-and -or -not`, parentheses, single- or double-quoted strings (quotes doubled to escape),
//! `$true`/`$false`/`$null`, and bare words; property names and operators are case-insensitive.
//!
//! Values compare as text, case-insensitively; `$true` equals `True` (the module rewrites
//! `$true` to `'True'`, docs/protocol/exo-protocol.md §1.5; over REST a `$true` is refused before
//! it gets here, see [`boolean_variable_at`]); a multi-valued property matches when
//! any value does. `-like` knows the `*` wildcard only. Anything else (e.g. `-gt`, `-contains`) is
//! a syntax error: we refuse what we do not implement rather than guess.

use super::obj::{Obj, Prop};

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Filter {
    Cmp {
        property: String,
        op: Op,
        value: Option<String>,
    },
    Not(Box<Filter>),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Like,
    NotLike,
}

/// Why a filter was refused; the text is Exchange's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FilterError(pub String);

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    Dash(String),
    Str(String),
    Var(String),
    Word(String),
}

fn syntax(filter: &str, pos: usize) -> FilterError {
    FilterError(format!(
        "Invalid filter syntax. For a description of the filter parameter syntax see the command help.\n\"{filter}\" at position {}.",
        pos + 1
    ))
}

fn lex(filter: &str) -> Result<Vec<(usize, Tok)>, FilterError> {
    let chars: Vec<(usize, char)> = filter.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (pos, c) = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((pos, Tok::LParen));
                i += 1;
            }
            ')' => {
                out.push((pos, Tok::RParen));
                i += 1;
            }
            '\'' | '"' => {
                let quote = c;
                let mut text = String::new();
                i += 1;
                loop {
                    let Some(&(_, ch)) = chars.get(i) else {
                        return Err(syntax(filter, pos));
                    };
                    if ch == quote {
                        if chars.get(i + 1).map(|x| x.1) == Some(quote) {
                            text.push(quote);
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    text.push(ch);
                    i += 1;
                }
                out.push((pos, Tok::Str(text)));
            }
            '-' | '$' => {
                let mut word = String::new();
                i += 1;
                while let Some(&(_, ch)) = chars.get(i) {
                    if ch.is_alphanumeric() || ch == '_' {
                        word.push(ch);
                        i += 1;
                    } else {
                        break;
                    }
                }
                if word.is_empty() {
                    return Err(syntax(filter, pos));
                }
                out.push((
                    pos,
                    if c == '-' {
                        Tok::Dash(word)
                    } else {
                        Tok::Var(word)
                    },
                ));
            }
            _ => {
                let mut word = String::new();
                while let Some(&(_, ch)) = chars.get(i) {
                    if ch.is_whitespace() || ch == '(' || ch == ')' || ch == '\'' || ch == '"' {
                        break;
                    }
                    word.push(ch);
                    i += 1;
                }
                out.push((pos, Tok::Word(word)));
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    text: &'a str,
    toks: Vec<(usize, Tok)>,
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|t| &t.1)
    }
    fn pos(&self) -> usize {
        self.toks.get(self.at).map_or(self.text.len(), |t| t.0)
    }
    fn keyword(&self, name: &str) -> bool {
        matches!(self.peek(), Some(Tok::Dash(w)) if w.eq_ignore_ascii_case(name))
    }
    fn or(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.at += 1;
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }
    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            self.at += 1;
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }
    fn unary(&mut self) -> Result<Filter, FilterError> {
        if self.keyword("not") {
            self.at += 1;
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.at += 1;
            let inner = self.or()?;
            if self.peek() != Some(&Tok::RParen) {
                return Err(syntax(self.text, self.pos()));
            }
            self.at += 1;
            return Ok(inner);
        }
        self.comparison()
    }
    fn comparison(&mut self) -> Result<Filter, FilterError> {
        let Some(Tok::Word(property)) = self.peek().cloned() else {
            return Err(syntax(self.text, self.pos()));
        };
        self.at += 1;
        let op = match self.peek() {
            Some(Tok::Dash(w)) => match w.to_ascii_lowercase().as_str() {
                "eq" => Op::Eq,
                "ne" => Op::Ne,
                "like" => Op::Like,
                "notlike" => Op::NotLike,
                _ => return Err(syntax(self.text, self.pos())),
            },
            _ => return Err(syntax(self.text, self.pos())),
        };
        self.at += 1;
        let value = match self.peek().cloned() {
            Some(Tok::Str(s) | Tok::Word(s)) => Some(s),
            Some(Tok::Var(v)) => match v.to_ascii_lowercase().as_str() {
                "true" => Some("True".to_owned()),
                "false" => Some("False".to_owned()),
                "null" => None,
                _ => return Err(syntax(self.text, self.pos())),
            },
            _ => return Err(syntax(self.text, self.pos())),
        };
        self.at += 1;
        Ok(Filter::Cmp {
            property,
            op,
            value,
        })
    }
}

/// Where `text` holds a `$true`/`$false` variable (a byte offset), if it does: the REST
/// endpoint refuses those, since it has no PowerShell session to resolve variables in; the
/// module sends `'True'`/`'False'` instead.
pub(crate) fn boolean_variable_at(text: &str) -> Option<usize> {
    lex(text)
        .ok()?
        .into_iter()
        .find_map(|(pos, tok)| match tok {
            Tok::Var(v) if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false") => {
                Some(pos)
            }
            _ => None,
        })
}

/// The refusal of a filter holding a `$true`/`$false` variable at `pos`.
pub(crate) fn boolean_variable_error(text: &str, pos: usize) -> FilterError {
    syntax(text, pos)
}

/// The parameters whose `$true`/`$false` the module rewrites to `'True'`/`'False'` before
/// sending (`$FilterParametersForBooleanParsing`, `Sanitize-BoolValuesInFilter` in
/// Calvindd2f/EXO_PROJECT `.idea/full_modoule_dump.ps1`).
const BOOLEAN_FILTER_PARAMETERS: [&str; 3] =
    ["Filter", "RecipientFilter", "RecipientPreviewFilter"];

/// Refuses a REST call (`InvokeCommand` or an entity set's `$filter`, passed as `Filter`) whose
/// filter parameter holds a `$true`/`$false` variable: the REST endpoint has no PowerShell
/// session to resolve variables in (issue 15, divergence 3). The binding error is our guess at
/// the service's text (docs/fidelity.md).
pub(crate) fn refuse_boolean_variables(
    params: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), super::cmdlets::ExoError> {
    for name in BOOLEAN_FILTER_PARAMETERS {
        let sent = params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str());
        if let Some(filter) = sent
            && let Some(pos) = boolean_variable_at(filter)
        {
            return Err(super::cmdlets::ExoError::filter_variable(name, filter, pos));
        }
    }
    Ok(())
}

impl Filter {
    /// Parses `text`, checking property names against `properties` (case-insensitive).
    pub(crate) fn parse(text: &str, properties: &[&str]) -> Result<Filter, FilterError> {
        let toks = lex(text)?;
        let mut parser = Parser { text, toks, at: 0 };
        let filter = parser.or()?;
        if parser.at != parser.toks.len() {
            return Err(syntax(text, parser.pos()));
        }
        filter.check(text, properties)?;
        Ok(filter)
    }

    fn check(&self, text: &str, properties: &[&str]) -> Result<(), FilterError> {
        match self {
            Filter::Cmp { property, .. } => {
                if properties.iter().any(|p| p.eq_ignore_ascii_case(property)) {
                    Ok(())
                } else {
                    let pos = text.find(property.as_str()).unwrap_or(0);
                    Err(FilterError(format!(
                        "\"{property}\" is not a recognized filterable property. For a complete list of filterable properties see the command help.\n\"{text}\" at position {}.",
                        pos + 1
                    )))
                }
            }
            Filter::Not(inner) => inner.check(text, properties),
            Filter::And(a, b) | Filter::Or(a, b) => {
                a.check(text, properties)?;
                b.check(text, properties)
            }
        }
    }

    /// Whether `obj` passes.
    pub(crate) fn matches(&self, obj: &Obj) -> bool {
        match self {
            Filter::Not(inner) => !inner.matches(obj),
            Filter::And(a, b) => a.matches(obj) && b.matches(obj),
            Filter::Or(a, b) => a.matches(obj) || b.matches(obj),
            Filter::Cmp {
                property,
                op,
                value,
            } => {
                let prop = obj
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(property))
                    .map(|(_, p)| p);
                let values: Vec<String> = match prop {
                    Some(Prop::Strs(list)) => list.clone(),
                    Some(p) => p.text().into_iter().collect(),
                    None => Vec::new(),
                };
                let hit = match value {
                    None => values.iter().all(String::is_empty),
                    Some(v) => values.iter().any(|x| match op {
                        Op::Eq | Op::Ne => x.eq_ignore_ascii_case(v),
                        Op::Like | Op::NotLike => wildcard(v, x),
                    }),
                };
                match op {
                    Op::Eq | Op::Like => hit,
                    Op::Ne | Op::NotLike => !hit,
                }
            }
        }
    }
}

/// Case-insensitive match with `*` wildcards.
fn wildcard(pattern: &str, text: &str) -> bool {
    let pattern = pattern.to_lowercase();
    let text = text.to_lowercase();
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj() -> Obj {
        vec![
            ("Name", Prop::Str("Adele Vance".into())),
            ("RecipientTypeDetails", Prop::Str("SharedMailbox".into())),
            ("HiddenFromAddressListsEnabled", Prop::Bool(false)),
            (
                "EmailAddresses",
                Prop::Strs(vec!["SMTP:a@x.com".into(), "smtp:b@y.com".into()]),
            ),
        ]
    }
    const PROPS: &[&str] = &[
        "Name",
        "RecipientTypeDetails",
        "HiddenFromAddressListsEnabled",
        "EmailAddresses",
    ];

    #[test]
    fn evaluates_the_subset() {
        let cases = [
            ("name -eq 'adele vance'", true),
            ("Name -ne \"Adele Vance\"", false),
            ("Name -like 'ad*'", true),
            ("Name -like '*van*'", true),
            ("Name -notlike 'b*'", true),
            ("HiddenFromAddressListsEnabled -eq $false", true),
            ("HiddenFromAddressListsEnabled -eq 'True'", false),
            (
                "-not (RecipientTypeDetails -eq 'UserMailbox') -and Name -like 'A*'",
                true,
            ),
            (
                "(Name -eq 'x' -or Name -eq 'Adele Vance') -and EmailAddresses -eq 'smtp:b@y.com'",
                true,
            ),
            ("EmailAddresses -like '*@x.com'", true),
            ("Name -eq 'O''Brien'", false),
        ];
        for (text, expected) in cases {
            let f = Filter::parse(text, PROPS).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            assert_eq!(f.matches(&obj()), expected, "{text}");
        }
    }

    #[test]
    fn refuses_bad_syntax_and_unknown_properties() {
        for text in [
            "Name -eqq 'x'",
            "Name -eq",
            "(Name -eq 'x'",
            "Name -gt 1",
            "'x' -eq Name",
            "Name -eq 'x",
        ] {
            let err = Filter::parse(text, PROPS).unwrap_err();
            assert!(
                err.0.starts_with("Invalid filter syntax"),
                "{text}: {err:?}"
            );
        }
        let err = Filter::parse("Nmae -eq 'x'", PROPS).unwrap_err();
        assert!(
            err.0
                .contains("\"Nmae\" is not a recognized filterable property"),
            "{err:?}"
        );
    }
}
