//! Microsoft clouds: which authority host issues tokens and which Exchange resource they are for.
//!
//! Values from `docs/protocol/entra-auth.md` §1.1–1.2. The sovereign Exchange resources come from
//! third-party code only (docs/protocol/entra-auth.md §1.2); every value can be overridden in
//! configuration. This module refuses unknown cloud names rather than guessing.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A Microsoft cloud instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    /// Commercial Microsoft 365, also GCC (moderate).
    #[default]
    Public,
    /// US Government GCC High.
    GccHigh,
    /// US Government DoD.
    Dod,
    /// Microsoft 365 operated by 21Vianet.
    China,
}

impl Cloud {
    /// Every cloud, for help text and tests.
    pub const ALL: [Cloud; 4] = [Cloud::Public, Cloud::GccHigh, Cloud::Dod, Cloud::China];

    /// The Entra ID authority host (scheme and host, no trailing slash).
    pub fn authority_host(self) -> &'static str {
        match self {
            Cloud::Public => "https://login.microsoftonline.com",
            Cloud::GccHigh | Cloud::Dod => "https://login.microsoftonline.us",
            Cloud::China => "https://login.partner.microsoftonline.cn",
        }
    }

    /// The Exchange Online resource (App ID URI) tokens are requested for.
    pub fn exchange_resource(self) -> &'static str {
        match self {
            Cloud::Public => "https://outlook.office365.com",
            Cloud::GccHigh => "https://outlook.office365.us",
            Cloud::Dod => "https://outlook-dod.office365.us",
            Cloud::China => "https://partner.outlook.cn",
        }
    }

    /// The v2 scope for the Exchange resource.
    pub fn exchange_scope(self) -> String {
        format!("{}/.default", self.exchange_resource())
    }

    /// The configuration name of this cloud.
    pub fn name(self) -> &'static str {
        match self {
            Cloud::Public => "public",
            Cloud::GccHigh => "gcchigh",
            Cloud::Dod => "dod",
            Cloud::China => "china",
        }
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Cloud {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s
            .trim()
            .to_ascii_lowercase()
            .replace(['-', '_', ' '], "")
            .as_str()
        {
            "public" | "commercial" | "global" | "gcc" | "azurepubliccloud" => Ok(Cloud::Public),
            "gcchigh" | "usgov" | "usgovernment" | "azureusgovernment" => Ok(Cloud::GccHigh),
            "dod" | "usgovdod" => Ok(Cloud::Dod),
            "china" | "21vianet" | "azurechinacloud" => Ok(Cloud::China),
            _ => Err(format!(
                "unknown cloud '{s}'; use one of: public (also GCC), gcchigh, dod, china"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases_parse() {
        for cloud in Cloud::ALL {
            assert_eq!(cloud.name().parse::<Cloud>().unwrap(), cloud);
            assert!(cloud.authority_host().starts_with("https://"));
            assert!(cloud.exchange_scope().ends_with("/.default"));
        }
        assert_eq!("GCC-High".parse::<Cloud>().unwrap(), Cloud::GccHigh);
        assert_eq!("gcc".parse::<Cloud>().unwrap(), Cloud::Public);
        assert!("germany".parse::<Cloud>().unwrap_err().contains("gcchigh"));
    }
}
