//! A small blocking client of the HTTP API, used by `freshet query`.
//!
//! It speaks plain HTTP only (freshet serves no TLS) and gives up after [`REQUEST_TIMEOUT`].

use std::io;
use std::time::Duration;

/// How long one request may take, connecting included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is not `host:port` or `http://host:port`.
    #[error("invalid freshet address `{addr}`: {reason}")]
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No HTTP exchange happened: nothing listens there, or the network failed.
    #[error(
        "cannot reach freshet at {url}: {reason} (is `freshet demo` or `freshet run` running?)"
    )]
    Unreachable {
        /// The base URL tried.
        url: String,
        /// What went wrong, in a few words.
        reason: String,
    },
    /// freshet answered with an error status; `message` is its `error` field.
    #[error("freshet at {url} answered {status}: {message}")]
    Status {
        /// The base URL asked.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The server's explanation.
        message: String,
    },
    /// The server answered something that is not the API's JSON.
    #[error("unexpected response from {url}: {reason}")]
    BadResponse {
        /// The base URL asked.
        url: String,
        /// What was wrong with it.
        reason: String,
    },
}

impl ClientError {
    /// Whether retrying later may help (freshet not up yet, or its store briefly unavailable).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Status { status, .. } => *status == 503,
            Self::InvalidAddress { .. } | Self::BadResponse { .. } => false,
        }
    }
}

/// Asks freshet at `addr` (`host:port` or `http://host:port`) for the features of `entities` in
/// `view` with one `POST /v1/features`, and returns the response body:
/// `{"view": .., "results": [{"entity": .., "as_of": .., "features": {..}} | {"entity": .., "found": false}, ..]}`.
pub fn get_features(
    addr: &str,
    view: &str,
    entities: &[String],
) -> Result<serde_json::Value, ClientError> {
    let base = base_url(addr)?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(REQUEST_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let body = serde_json::json!({ "view": view, "entities": entities });
    let mut response = agent
        .post(format!("{base}/v1/features"))
        .send_json(&body)
        .map_err(|e| ClientError::Unreachable {
            url: base.clone(),
            reason: describe(&e),
        })?;
    let status = response.status();
    let json: Result<serde_json::Value, _> = response.body_mut().read_json();
    match json {
        Ok(value) if status.is_success() => Ok(value),
        Ok(value) => Err(ClientError::Status {
            url: base,
            status: status.as_u16(),
            message: value
                .get("error")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("no error message")
                .to_owned(),
        }),
        Err(e) => Err(ClientError::BadResponse {
            url: base,
            reason: format!(
                "status {}, body is not JSON: {}",
                status.as_u16(),
                describe(&e)
            ),
        }),
    }
}

/// `http://host:port` without a trailing slash.
fn base_url(addr: &str) -> Result<String, ClientError> {
    let invalid = |reason| ClientError::InvalidAddress {
        addr: addr.to_owned(),
        reason,
    };
    let trimmed = addr.trim().trim_end_matches('/');
    let host_port = match trimmed.split_once("://") {
        Some(("http", rest)) => rest,
        Some(_) => return Err(invalid("only http:// is supported")),
        None => trimmed,
    };
    if host_port.is_empty() {
        return Err(invalid("expected host:port"));
    }
    if host_port.contains('/') {
        return Err(invalid("expected host:port without a path"));
    }
    Ok(format!("http://{host_port}"))
}

fn describe(err: &ureq::Error) -> String {
    match err {
        ureq::Error::Io(e) => match e.kind() {
            io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
            io::ErrorKind::TimedOut => "timed out".to_owned(),
            _ => e.to_string(),
        },
        ureq::Error::Timeout(_) => format!("timed out after {}s", REQUEST_TIMEOUT.as_secs()),
        ureq::Error::HostNotFound => "host not found".to_owned(),
        ureq::Error::ConnectionFailed => "connection failed".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_normalise_to_a_base_url() {
        let ok = |a: &str| base_url(a).expect("valid");
        assert_eq!(ok("127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(ok("http://localhost:8080/"), "http://localhost:8080");
        assert!(matches!(
            base_url("https://x:1"),
            Err(ClientError::InvalidAddress { .. })
        ));
        assert!(matches!(
            base_url(""),
            Err(ClientError::InvalidAddress { .. })
        ));
        assert!(matches!(
            base_url("x:1/v1"),
            Err(ClientError::InvalidAddress { .. })
        ));
    }

    #[test]
    fn connection_refused_says_what_to_start() {
        // Bind then drop a listener so the port is very likely closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let err = get_features(&addr, "card", &["c1".to_owned()]).expect_err("nothing listens");
        assert!(err.is_retryable());
        assert_eq!(
            err.to_string(),
            format!(
                "cannot reach freshet at http://{addr}: connection refused \
                 (is `freshet demo` or `freshet run` running?)"
            )
        );
    }
}
