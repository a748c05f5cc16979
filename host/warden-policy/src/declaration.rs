//! What a plugin says it needs: cmdlets and, for each, the parameter names it will pass.
//!
//! A run gets the intersection of what its plugin declares and what its grant allows (Zed's
//! dual-consent model): a granted cmdlet or parameter that is not declared is refused, with a
//! reason saying it was not declared; a declared one that is not granted is simply not granted.
//!
//! Manifest format (TOML; the JSON form is the same shape):
//!
//! ```toml
//! [cmdlets]
//! Get-Mailbox = ["Identity", "ResultSize"]
//! Set-Mailbox = ["Identity", "DisplayName"]
//! ```

use crate::names;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A plugin's declared needs. Clones share one map: the policy keeps a run's grant per
/// declaration and compares the one a run brings with the kept one at every run's start, which
/// for a clone of the same is a pointer comparison (`Arc`'s equality, for an `Eq` content,
/// compares pointers first), not a walk of every name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declaration {
    cmdlets: Arc<BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeclaration {
    #[serde(default)]
    cmdlets: BTreeMap<String, Vec<String>>,
}

/// A manifest that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("plugin declaration: {0}")]
pub struct DeclarationError(String);

impl Declaration {
    /// Parses a TOML manifest (`[cmdlets]` table of cmdlet → parameter names).
    pub fn from_toml_str(text: &str) -> Result<Self, DeclarationError> {
        let raw: RawDeclaration =
            toml::from_str(text).map_err(|e| DeclarationError(e.to_string()))?;
        Self::from_raw(raw)
    }

    /// Parses the same manifest written as JSON (`{"cmdlets": {"Get-Mailbox": ["Identity"]}}`).
    pub fn from_json_str(text: &str) -> Result<Self, DeclarationError> {
        let raw: RawDeclaration =
            serde_json::from_str(text).map_err(|e| DeclarationError(e.to_string()))?;
        Self::from_raw(raw)
    }

    /// Builds a declaration in code.
    pub fn new<'a>(
        cmdlets: impl IntoIterator<Item = (&'a str, &'a [&'a str])>,
    ) -> Result<Self, DeclarationError> {
        let raw = RawDeclaration {
            cmdlets: cmdlets
                .into_iter()
                .map(|(c, ps)| (c.to_owned(), ps.iter().map(|p| (*p).to_owned()).collect()))
                .collect(),
        };
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawDeclaration) -> Result<Self, DeclarationError> {
        let mut cmdlets: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (cmdlet, parameters) in raw.cmdlets {
            names::validate_cmdlet(&cmdlet).map_err(DeclarationError)?;
            if cmdlets.keys().any(|c| names::same(c, &cmdlet)) {
                return Err(DeclarationError(format!(
                    "cmdlet {cmdlet} is declared twice"
                )));
            }
            for p in &parameters {
                names::validate_parameter(p).map_err(DeclarationError)?;
            }
            cmdlets.insert(cmdlet, parameters);
        }
        Ok(Declaration {
            cmdlets: Arc::new(cmdlets),
        })
    }

    /// The declared parameter names of `cmdlet`, if it is declared.
    pub fn parameters(&self, cmdlet: &str) -> Option<&[String]> {
        self.cmdlets
            .iter()
            .find(|(c, _)| names::same(c, cmdlet))
            .map(|(_, ps)| ps.as_slice())
    }

    /// True when `cmdlet` is declared with `parameter`.
    pub fn declares(&self, cmdlet: &str, parameter: &str) -> bool {
        self.parameters(cmdlet)
            .is_some_and(|ps| ps.iter().any(|p| names::same(p, parameter)))
    }
}
