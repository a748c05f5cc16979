//! # warden-fleet: the plan of a fleet run
//!
//! A fleet run runs one plugin or script once per tenant of a set. This crate decides, before
//! anything runs, which tenants ([`Selector`]), in which order of waves ([`Waves`]), and how
//! many failures stop new tenants from starting ([`MaxFailures`]). It knows nothing of the
//! store, HTTP or Exchange: `warden fleet run` turns the plan into jobs in `warden-store`, and
//! the store's claim statement enforces waves and the failure limit for every worker at once.
//!
//! Selectors (`--tenants`): a comma list of terms, each `all`, a profile name, `tag:TAG`, or
//! one of those after `!` to exclude it. Without a term that includes, the list starts from
//! `all` (`!contoso` is every tenant but contoso). A name or tag that no profile has is an error
//! naming it (a typo must not silently shrink or widen a fleet), and so is a selection that
//! leaves no tenant. A policy grant's `tenants` use the same grammar ([`Selector::selects`]).
#![deny(missing_docs)]

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// What went wrong in a fleet's plan. Each message names the input and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A selector that cannot be read.
    #[error(
        "--tenants `{selector}`: {reason}\n  fix: give `all`, profile names, `tag:TAG`, and \
         `!NAME` or `!tag:TAG` to leave some out, separated by commas"
    )]
    BadSelector {
        /// The selector as given.
        selector: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A selector names a profile the config does not have.
    #[error(
        "--tenants names `{name}`, which is no [tenants.NAME] profile\n  fix: use one of: {known}"
    )]
    UnknownTenant {
        /// The name.
        name: String,
        /// The profiles that exist.
        known: String,
    },
    /// A selector names a tag no profile carries.
    #[error("--tenants names tag `{tag}`, which no profile has\n  fix: use one of: {known}")]
    UnknownTag {
        /// The tag.
        tag: String,
        /// The tags that exist.
        known: String,
    },
    /// The selection leaves no tenant.
    #[error(
        "--tenants `{selector}` leaves no tenant\n  fix: include at least one tenant the exclusions do not remove"
    )]
    Empty {
        /// The selector as given.
        selector: String,
    },
    /// `--waves` cannot be read.
    #[error(
        "--waves `{waves}`: {reason}\n  fix: give wave sizes as counts or percentages of the tenants, growing, say `1,10%,100%`"
    )]
    BadWaves {
        /// As given.
        waves: String,
        /// What is wrong.
        reason: String,
    },
    /// `--max-failures` cannot be read.
    #[error(
        "--max-failures `{given}`: {reason}\n  fix: give a count (`3`) or a percentage of the tenants (`5%`)"
    )]
    BadMaxFailures {
        /// As given.
        given: String,
        /// What is wrong.
        reason: String,
    },
}

/// A tenant the selector can choose: its profile name and tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The `[tenants.NAME]` profile name.
    pub name: String,
    /// Its `tags`.
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    All,
    Name(String),
    Tag(String),
}

/// A parsed `--tenants` selector (see the crate's documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    text: String,
    include: Vec<Term>,
    exclude: Vec<Term>,
}

impl FromStr for Selector {
    type Err = PlanError;

    fn from_str(text: &str) -> Result<Self, PlanError> {
        let bad = |reason: String| PlanError::BadSelector {
            selector: text.to_owned(),
            reason,
        };
        let mut include = Vec::new();
        let mut exclude = Vec::new();
        for raw in text.split(',') {
            let raw = raw.trim();
            let (negated, body) = match raw.strip_prefix('!') {
                Some(body) => (true, body.trim()),
                None => (false, raw),
            };
            let term = if body.is_empty() {
                return Err(bad("an empty term (two commas, or a lone `!`)".to_owned()));
            } else if body == "all" {
                Term::All
            } else if let Some(tag) = body.strip_prefix("tag:") {
                if tag.is_empty() {
                    return Err(bad("`tag:` names no tag".to_owned()));
                }
                Term::Tag(tag.to_owned())
            } else if body.contains(':') || body.contains('!') {
                return Err(bad(format!(
                    "`{body}` is neither a profile name nor `tag:TAG`"
                )));
            } else {
                Term::Name(body.to_owned())
            };
            if negated {
                if term == Term::All {
                    return Err(bad("`!all` leaves no tenant".to_owned()));
                }
                exclude.push(term);
            } else {
                include.push(term);
            }
        }
        Ok(Selector {
            text: text.to_owned(),
            include,
            exclude,
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Selector {
    /// Whether a profile name can be written as a selector term naming that profile alone:
    /// not `all`, no `,` `!` `:` (the selector's punctuation), no space at either end (terms
    /// are trimmed). Other profiles are still chosen by `all` or their tags.
    pub fn can_name(name: &str) -> bool {
        !name.is_empty() && name != "all" && name.trim() == name && !name.contains([',', '!', ':'])
    }

    /// Whether this selector chooses `candidate` (a name or tag it mentions that no profile
    /// has simply matches nothing here: [`Selector::resolve`] is where such typos are errors).
    pub fn selects(&self, candidate: &Candidate) -> bool {
        let matches = |term: &Term| match term {
            Term::All => true,
            Term::Name(name) => &candidate.name == name,
            Term::Tag(tag) => candidate.tags.contains(tag),
        };
        (self.include.is_empty() || self.include.iter().any(matches))
            && !self.exclude.iter().any(matches)
    }

    /// The names of the tenants this selector chooses among `candidates`, in the candidates'
    /// order. Every name and tag it mentions must exist; the result is never empty.
    pub fn resolve(&self, candidates: &[Candidate]) -> Result<Vec<String>, PlanError> {
        let known_tags: BTreeSet<&str> = candidates
            .iter()
            .flat_map(|c| c.tags.iter().map(String::as_str))
            .collect();
        for term in self.include.iter().chain(&self.exclude) {
            match term {
                Term::All => {}
                Term::Name(name) => {
                    if !candidates.iter().any(|c| &c.name == name) {
                        return Err(PlanError::UnknownTenant {
                            name: name.clone(),
                            known: list(candidates.iter().map(|c| c.name.as_str())),
                        });
                    }
                }
                Term::Tag(tag) => {
                    if !known_tags.contains(tag.as_str()) {
                        return Err(PlanError::UnknownTag {
                            tag: tag.clone(),
                            known: list(known_tags.iter().copied()),
                        });
                    }
                }
            }
        }
        let chosen: Vec<String> = candidates
            .iter()
            .filter(|c| self.selects(c))
            .map(|c| c.name.clone())
            .collect();
        if chosen.is_empty() {
            return Err(PlanError::Empty {
                selector: self.text.clone(),
            });
        }
        Ok(chosen)
    }
}

fn list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<&str> = items.collect();
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(", ")
    }
}

/// A size given as a count or a percentage of the tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Size {
    Count(u64),
    /// Percent, 1 to 100.
    Percent(u64),
}

impl Size {
    fn parse(text: &str) -> Result<Size, String> {
        let text = text.trim();
        if let Some(percent) = text.strip_suffix('%') {
            let value: u64 = percent
                .trim()
                .parse()
                .map_err(|_| format!("`{text}` is not a whole percentage"))?;
            if value > 100 {
                return Err(format!("`{text}` is more than 100%"));
            }
            Ok(Size::Percent(value))
        } else {
            text.parse()
                .map(Size::Count)
                .map_err(|_| format!("`{text}` is neither a count nor a percentage"))
        }
    }
}

/// `--waves`: cumulative sizes (`1,10%,100%`: one tenant first, then up to a tenth, then all).
/// A wave starts only when every tenant of the earlier waves has ended and the failure limit
/// still holds. Tenants past the last size form one more, final wave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waves(Vec<Size>);

impl FromStr for Waves {
    type Err = PlanError;

    fn from_str(text: &str) -> Result<Self, PlanError> {
        let sizes = text
            .split(',')
            .map(Size::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| PlanError::BadWaves {
                waves: text.to_owned(),
                reason,
            })?;
        if sizes.contains(&Size::Count(0)) || sizes.contains(&Size::Percent(0)) {
            return Err(PlanError::BadWaves {
                waves: text.to_owned(),
                reason: "a wave of no tenant".to_owned(),
            });
        }
        Ok(Waves(sizes))
    }
}

impl Waves {
    /// One wave of everyone.
    pub fn single() -> Waves {
        Waves(vec![Size::Percent(100)])
    }

    /// The wave (0, 1, …) of each of `tenants` tenants, in order. Percentages round up (10%
    /// of 5 tenants is 1); a wave no larger than the one before it adds nobody and is skipped.
    pub fn assign(&self, tenants: usize) -> Vec<u32> {
        let total = tenants as u64;
        let mut bounds: Vec<u64> = Vec::new();
        for size in &self.0 {
            let upto = match *size {
                Size::Count(n) => n.min(total),
                Size::Percent(p) => (total * p).div_ceil(100),
            };
            if bounds.last().is_none_or(|&last| upto > last) {
                bounds.push(upto);
            }
        }
        if bounds.last().is_none_or(|&last| last < total) {
            bounds.push(total);
        }
        (0..total)
            .map(|i| bounds.iter().position(|&upto| i < upto).unwrap_or(0) as u32)
            .collect()
    }
}

/// `--max-failures`: past this many failed tenants no new tenant starts (running ones end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxFailures(Size);

impl FromStr for MaxFailures {
    type Err = PlanError;

    fn from_str(text: &str) -> Result<Self, PlanError> {
        Size::parse(text)
            .map(MaxFailures)
            .map_err(|reason| PlanError::BadMaxFailures {
                given: text.to_owned(),
                reason,
            })
    }
}

impl MaxFailures {
    /// How many failures are tolerated over `tenants` tenants: one more stops new starts.
    /// A percentage rounds down (5% of 10 tenants tolerates none).
    pub fn tolerated(&self, tenants: usize) -> u64 {
        match self.0 {
            Size::Count(n) => n,
            Size::Percent(p) => tenants as u64 * p / 100,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_with_the_selectors_punctuation_cannot_be_named() {
        for name in ["contoso", "contoso-eu", "my tenant", "a.b_c"] {
            assert!(Selector::can_name(name), "{name}");
            let picked: Selector = name.parse().unwrap();
            let candidates = [Candidate {
                name: name.to_owned(),
                tags: vec![],
            }];
            assert_eq!(picked.resolve(&candidates).unwrap(), [name]);
        }
        for name in ["all", "a,b", "!a", "x:y", " a", "a ", ""] {
            assert!(!Selector::can_name(name), "{name:?}");
        }
    }

    fn fleet() -> Vec<Candidate> {
        let c = |name: &str, tags: &[&str]| Candidate {
            name: name.to_owned(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        };
        vec![
            c("contoso", &["eu", "finance"]),
            c("fabrikam", &["us"]),
            c("northwind", &["eu"]),
            c("tailspin", &[]),
        ]
    }

    fn pick(selector: &str) -> Result<Vec<String>, PlanError> {
        selector.parse::<Selector>()?.resolve(&fleet())
    }

    /// `selects` is the rule `resolve` filters by: the same tenants, one at a time.
    #[test]
    fn selects_agrees_with_resolve() {
        for selector in [
            "all",
            "tag:eu",
            "tag:eu,!tag:finance",
            "!contoso",
            "fabrikam,tailspin",
        ] {
            let parsed: Selector = selector.parse().unwrap();
            let one_by_one: Vec<String> = fleet()
                .into_iter()
                .filter(|c| parsed.selects(c))
                .map(|c| c.name)
                .collect();
            assert_eq!(one_by_one, pick(selector).unwrap(), "{selector}");
        }
        // A name no profile has selects nothing here (resolve is where it is an error).
        let typo: Selector = "contosso".parse().unwrap();
        assert!(!fleet().iter().any(|c| typo.selects(c)));
    }

    #[test]
    fn selectors_choose_by_all_name_tag_and_lists() {
        assert_eq!(
            pick("all").unwrap(),
            ["contoso", "fabrikam", "northwind", "tailspin"]
        );
        assert_eq!(pick("tag:eu").unwrap(), ["contoso", "northwind"]);
        assert_eq!(pick("fabrikam").unwrap(), ["fabrikam"]);
        assert_eq!(pick("tailspin, tag:us").unwrap(), ["fabrikam", "tailspin"]);
    }

    #[test]
    fn exclusions_remove_names_and_tags_and_start_from_all_alone() {
        assert_eq!(
            pick("all,!contoso").unwrap(),
            ["fabrikam", "northwind", "tailspin"]
        );
        assert_eq!(pick("tag:eu,!tag:finance").unwrap(), ["northwind"]);
        assert_eq!(pick("!tag:eu").unwrap(), ["fabrikam", "tailspin"]);
    }

    #[test]
    fn unknown_names_and_tags_are_named_even_in_exclusions() {
        let error = pick("contso").unwrap_err().to_string();
        assert!(
            error.contains("`contso`") && error.contains("contoso, fabrikam"),
            "{error}"
        );
        let error = pick("all,!tag:apac").unwrap_err().to_string();
        assert!(
            error.contains("tag `apac`") && error.contains("eu, finance, us"),
            "{error}"
        );
    }

    #[test]
    fn an_empty_selection_or_a_malformed_selector_is_refused() {
        assert!(matches!(
            pick("tag:eu,!tag:eu"),
            Err(PlanError::Empty { .. })
        ));
        for bad in ["", "a,,b", "!", "!all", "tag:", "x:y"] {
            assert!(
                matches!(pick(bad), Err(PlanError::BadSelector { .. })),
                "{bad}: {:?}",
                pick(bad)
            );
        }
    }

    #[test]
    fn waves_grow_by_counts_and_rounded_up_percentages() {
        let waves: Waves = "1,10%,100%".parse().unwrap();
        let assigned = waves.assign(20);
        assert_eq!(assigned.iter().filter(|&&w| w == 0).count(), 1);
        assert_eq!(assigned.iter().filter(|&&w| w == 1).count(), 1);
        assert_eq!(assigned.iter().filter(|&&w| w == 2).count(), 18);
        // 10% of 5 rounds up to 1, no larger than the first wave: skipped.
        assert_eq!(waves.assign(5), [0, 1, 1, 1, 1]);
        // Tenants past the last size form a final wave.
        assert_eq!("2".parse::<Waves>().unwrap().assign(4), [0, 0, 1, 1]);
        assert_eq!(Waves::single().assign(3), [0, 0, 0]);
        for bad in ["0", "1,x", "150%", ""] {
            assert!(bad.parse::<Waves>().is_err(), "{bad}");
        }
    }

    #[test]
    fn max_failures_is_a_count_or_a_rounded_down_percentage() {
        assert_eq!("3".parse::<MaxFailures>().unwrap().tolerated(100), 3);
        assert_eq!("5%".parse::<MaxFailures>().unwrap().tolerated(100), 5);
        assert_eq!("5%".parse::<MaxFailures>().unwrap().tolerated(10), 0);
        assert!("many".parse::<MaxFailures>().is_err());
    }
}
