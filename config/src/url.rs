//! Service URLs: checked by scheme, and shown with any password replaced by `***`.
use serde::{Serialize, Serializer};
use std::fmt;

/// A URL that may carry a password (`amqp://user:pass@host/vhost`). `Debug` and
/// `Display` show [`ServiceUrl::redacted`]; [`ServiceUrl::as_str`] gives the real one
/// for the client library.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceUrl(String);

impl ServiceUrl {
    /// Accepts `url` if its scheme is one of `schemes` (without `://`) and it has a
    /// host part; on failure returns the rule it broke, without the URL itself
    /// (it may contain a password).
    pub fn parse(url: &str, schemes: &[&str]) -> Result<Self, String> {
        let url = url.trim();
        let expected = schemes
            .iter()
            .map(|s| format!("{s}://"))
            .collect::<Vec<_>>()
            .join(" or ");
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!("must be a URL starting with {expected}"));
        };
        if !schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
            return Err(format!(
                "must be a URL starting with {expected} (got scheme `{scheme}`)"
            ));
        }
        // Unix-socket schemes (`redis+unix:///path`) have an empty authority.
        let socket = scheme.contains("unix");
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or("");
        if !socket && host.is_empty() {
            return Err("must name a host, e.g. localhost".to_string());
        }
        if url.contains(char::is_whitespace) {
            return Err("must not contain whitespace".to_string());
        }
        Ok(ServiceUrl(url.to_string()))
    }

    /// For built-in defaults, which unit tests check against [`ServiceUrl::parse`].
    pub(crate) fn trusted(url: &str) -> Self {
        ServiceUrl(url.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the URL embeds `user:password@`.
    pub fn has_password(&self) -> bool {
        userinfo(&self.0).is_some_and(|u| u.contains(':'))
    }

    /// The URL with the password (if any) replaced by `***`, for logs and messages.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

fn userinfo(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    authority.rsplit_once('@').map(|(user, _)| user)
}

/// `scheme://user:***@host/...`: hides the password of any URL string, parsed or not.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            // A user name alone is not a secret.
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl fmt::Debug for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceUrl({})", self.redacted())
    }
}

impl fmt::Display for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Written out in full: serialising is for saving a configuration, not for logs.
impl Serialize for ServiceUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("amqp://guest:pw@localhost:5672/%2f"),
            "amqp://guest:***@localhost:5672/%2f"
        );
        assert_eq!(
            redact_url("redis://:pw@redis:6379/0"),
            "redis://:***@redis:6379/0"
        );
        assert_eq!(redact_url("redis://u@h/0"), "redis://u@h/0");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        let u = ServiceUrl::parse("amqp://a:b@h/", &["amqp", "amqps"]).unwrap();
        assert!(u.has_password());
        assert_eq!(
            format!("{u} {u:?}"),
            "amqp://a:***@h/ ServiceUrl(amqp://a:***@h/)"
        );
        assert_eq!(u.as_str(), "amqp://a:b@h/");
    }

    #[test]
    fn checks_scheme_and_host() {
        assert!(ServiceUrl::parse("http://localhost:8000/v1", &["http", "https"]).is_ok());
        assert!(ServiceUrl::parse("localhost:8000", &["http"]).is_err());
        assert!(ServiceUrl::parse("ftp://x", &["http", "https"]).is_err());
        assert!(ServiceUrl::parse("http:///v1", &["http"]).is_err());
        assert!(ServiceUrl::parse("redis+unix:///tmp/r.sock", &["redis+unix"]).is_ok());
    }
}
