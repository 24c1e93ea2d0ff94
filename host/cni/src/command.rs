//! The CNI operations (`CNI_COMMAND`) and what each one demands of a call.
//!
//! [`crate::env`] parses the variable into a [`Command`]; [`crate::conf`] uses
//! [`Command::min_version`] to refuse, say, GC on a 1.0.0 config.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

/// `CNI_COMMAND` held something other than one of the six operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown CNI command {0:?}")]
pub struct UnknownCommand(pub String);

impl Command {
    pub const ALL: [Command; 6] = [
        Command::Add,
        Command::Del,
        Command::Check,
        Command::Status,
        Command::Gc,
        Command::Version,
    ];

    /// The spelling the spec uses in `CNI_COMMAND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// Whether the call is about one attachment, and so carries a container ID and ifname.
    pub fn is_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }

    /// The oldest config `cniVersion` in which this command exists.
    pub fn min_version(self) -> &'static str {
        match self {
            Command::Check => "0.4.0",
            Command::Status | Command::Gc => "1.1.0",
            Command::Add | Command::Del | Command::Version => "0.3.0",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Command {
    type Err = UnknownCommand;

    // Case-sensitive, like libcni's skel: runtimes always send upper case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Command::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCommand(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_str_and_serde() {
        for c in Command::ALL {
            assert_eq!(c.to_string().parse::<Command>(), Ok(c));
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), c);
        }
    }

    #[test]
    fn unknown_commands_are_rejected() {
        for bad in ["add", "", "GET", "ADD ", "FINALIZE"] {
            assert_eq!(bad.parse::<Command>(), Err(UnknownCommand(bad.to_string())));
        }
        assert_eq!(
            UnknownCommand("x".into()).to_string(),
            "unknown CNI command \"x\""
        );
        assert!(serde_json::from_str::<Command>("\"add\"").is_err());
    }

    #[test]
    fn attachment_commands_and_min_versions() {
        let attach: Vec<_> = Command::ALL
            .into_iter()
            .filter(|c| c.is_attachment())
            .collect();
        assert_eq!(attach, [Command::Add, Command::Del, Command::Check]);
        assert_eq!(Command::Check.min_version(), "0.4.0");
        assert_eq!(Command::Gc.min_version(), "1.1.0");
        assert_eq!(Command::Status.min_version(), "1.1.0");
        assert_eq!(Command::Add.min_version(), "0.3.0");
    }
}
