//! Who may do what through the API.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A key's role. Viewer reads; operator also creates, cancels and approves runs; admin also
/// manages projects and keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessRole {
    Viewer,
    Operator,
    Admin,
}

impl AccessRole {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessRole::Viewer => "viewer",
            AccessRole::Operator => "operator",
            AccessRole::Admin => "admin",
        }
    }

    /// Whether this role may do what `required` may.
    pub fn allows(self, required: AccessRole) -> bool {
        self >= required
    }
}

impl fmt::Display for AccessRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not `admin`, `operator` or `viewer`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown role `{0}`: use admin, operator or viewer")]
pub struct UnknownRole(pub String);

impl FromStr for AccessRole {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(AccessRole::Viewer),
            "operator" => Ok(AccessRole::Operator),
            "admin" => Ok(AccessRole::Admin),
            other => Err(UnknownRole(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_by_what_they_allow() {
        assert!(AccessRole::Admin.allows(AccessRole::Operator));
        assert!(AccessRole::Operator.allows(AccessRole::Viewer));
        assert!(!AccessRole::Viewer.allows(AccessRole::Operator));
        assert_eq!("operator".parse::<AccessRole>().unwrap(), AccessRole::Operator);
        assert!("root".parse::<AccessRole>().is_err());
    }
}
