//! HTTP transport shared by the network protocols: URL joining, JSON posts with bounded
//! answers, and errors classified for retries. The client itself comes from
//! [`crate::http_client`].

use bytes::Bytes;

pub use crate::http_client::{client, use_own_client_on_this_thread};
use crate::inference::error::{ErrorKind, InferError, parse_retry_after};
use crate::spec::Secret;
use crate::tls::client::{ClientTlsError, ClientTlsOptions, describe_handshake_failure};

/// Largest answer read from a model (64 MiB): bigger is a contract error, not an OOM.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Joins a replica base URL and a path without doubling or losing the slash.
pub fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// [`join`] for an already parsed base URL: only the path is parsed.
pub fn join_url(base: &reqwest::Url, path: &str) -> reqwest::Url {
    let mut url = base.clone();
    let joined = format!(
        "{}/{}",
        base.path().trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    url.set_path(&joined);
    url
}

/// How a version reaches its replicas over HTTP: the process's shared client (the web PKI
/// roots), or a client of its own when its endpoint has `tls` settings (a CA bundle, a client
/// certificate, a server name). Cloning is cheap.
#[derive(Clone, Default)]
pub struct Upstream {
    own: Option<reqwest::Client>,
}

impl Upstream {
    /// Through the process's shared client.
    pub fn shared() -> Self {
        Upstream::default()
    }

    /// Through a client of its own with these TLS settings.
    pub fn with_tls(options: &ClientTlsOptions) -> Result<Self, ClientTlsError> {
        Ok(Upstream {
            own: Some(crate::http_client::client_with_tls(options)?),
        })
    }

    /// The client to send with.
    pub fn client(&self) -> reqwest::Client {
        self.own.clone().unwrap_or_else(client)
    }

    /// `POST url` with a JSON body; returns the body of a 2xx answer.
    pub async fn post_json(
        &self,
        url: &str,
        body: String,
        headers: &[(String, Secret)],
        bearer: Option<&Secret>,
    ) -> Result<Bytes, InferError> {
        post_json_with(self.client(), url, body, headers, bearer).await
    }

    /// `GET url`; returns the body of a 2xx answer.
    pub async fn get(&self, url: &str, headers: &[(String, Secret)]) -> Result<Bytes, InferError> {
        let mut request = self.client().get(url);
        for (name, value) in headers {
            request = request.header(name.as_str(), value.expose());
        }
        send(request).await
    }
}

/// `POST url` with a JSON body through the shared client; returns the body of a 2xx answer.
pub async fn post_json(
    url: &str,
    body: String,
    headers: &[(String, Secret)],
    bearer: Option<&Secret>,
) -> Result<Bytes, InferError> {
    post_json_with(client(), url, body, headers, bearer).await
}

async fn post_json_with(
    client: reqwest::Client,
    url: &str,
    body: String,
    headers: &[(String, Secret)],
    bearer: Option<&Secret>,
) -> Result<Bytes, InferError> {
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(name.as_str(), value.expose());
    }
    // An empty key (`${OPENAI_API_KEY:-}` unset) means a server without authentication.
    if let Some(token) = bearer.filter(|t| !t.expose().is_empty()) {
        request = request.bearer_auth(token.expose());
    }
    send(request).await
}

async fn send(request: reqwest::RequestBuilder) -> Result<Bytes, InferError> {
    let response = request.send().await.map_err(classify)?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    if let Some(len) = response.content_length()
        && len as usize > MAX_RESPONSE_BYTES
    {
        return Err(InferError::contract(format!(
            "answer of {len} bytes is larger than the {MAX_RESPONSE_BYTES} byte limit"
        )));
    }
    // Read in chunks so a body without Content-Length cannot grow past the limit.
    let mut response = response;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(InferError::contract("answer larger than the 64 MiB limit"));
        }
        body.extend_from_slice(&chunk);
    }
    let body = Bytes::from(body);
    if status.is_success() {
        Ok(body)
    } else {
        Err(InferError::from_status(status.as_u16(), retry_after, &body))
    }
}

/// Maps a reqwest error to a kind. The message never includes the URL's credentials: reqwest
/// errors carry the URL, so only the error's own description is kept. A failed TLS handshake
/// is a configuration problem (retrying cannot fix a certificate): its message names the host
/// and says what to fix.
fn classify(e: reqwest::Error) -> InferError {
    if let Some(why) = describe_handshake_failure(&e) {
        let host = e
            .url()
            .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
            .unwrap_or_else(|| "the server".to_string());
        return InferError::new(
            ErrorKind::Misconfigured,
            format!("TLS handshake with {host} failed: {why}"),
        );
    }
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_builder() {
        // The request cannot be built (a header that is not valid HTTP): configuration.
        ErrorKind::Misconfigured
    } else if e.is_body() || e.is_decode() {
        // Connected and answered, then the body broke off.
        ErrorKind::Unavailable
    } else {
        ErrorKind::Connect
    };
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    InferError::new(kind, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_paths() {
        assert_eq!(join("http://a:1/", "/v2/x"), "http://a:1/v2/x");
        assert_eq!(join("http://a:1/v1", "chat"), "http://a:1/v1/chat");
        for (base, path) in [
            ("http://a:1/", "/v2/x"),
            ("http://a:1", "v2/x"),
            ("http://a:1/v1", "chat"),
            ("https://a.example/v1/", "/embeddings"),
        ] {
            let url = reqwest::Url::parse(base).unwrap();
            assert_eq!(
                join_url(&url, path).as_str(),
                join(base, path),
                "{base} + {path}"
            );
        }
    }

    #[tokio::test]
    async fn refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = post_json(&format!("http://{addr}/x"), "{}".into(), &[], None)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Connect, "{err}");
    }
}
