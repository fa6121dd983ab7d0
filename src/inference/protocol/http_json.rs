//! The one HTTP-JSON backend: encode the rows → `POST` the JSON body (bounded answer, errors
//! classified for retries by [`super::transport`]) → decode the answer. Every JSON protocol
//! (OIP v2, OpenAI chat and embeddings, TF Serving, custom JSON) supplies only what differs:
//! its request path, body, answer reading and credentials, as a [`JsonProtocol`].

use std::borrow::Cow;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::transport::{Upstream, join};
use super::{Backend, CallOutput, Contract, ContractProblem, SelectorSyntax};
use crate::inference::error::InferError;
use crate::spec::Secret;

/// The protocol-specific half of an [`HttpJsonBackend`].
pub(crate) trait JsonProtocol: Send + Sync {
    /// Path of a request, joined to the replica's base URL.
    fn path(&self) -> Cow<'_, str>;

    /// The request body for `inputs` (the contract's input columns).
    fn encode_body(&self, inputs: &RecordBatch, contract: &Contract) -> Result<String, InferError>;

    /// The contract's outputs from a 2xx answer to a request of `rows` rows.
    fn decode_answer(
        &self,
        body: &[u8],
        contract: &Contract,
        rows: usize,
    ) -> Result<CallOutput, InferError>;

    /// Extra headers sent with every request (configured credentials).
    fn headers(&self) -> &[(String, Secret)] {
        &[]
    }

    /// Bearer token sent with every request (an empty one is not sent).
    fn bearer(&self) -> Option<&Secret> {
        None
    }

    /// See [`Backend::max_rows_per_request`].
    fn max_rows_per_request(&self) -> Option<usize> {
        None
    }

    /// See [`Backend::selector_syntax`].
    fn selector_syntax(&self) -> SelectorSyntax;

    /// See [`Backend::check_contract`]; requests go through `upstream`.
    fn check_contract<'a>(
        &'a self,
        _upstream: &'a Upstream,
        _replica: &'a str,
        _contract: &'a Contract,
        _input_types: &'a [DataType],
    ) -> BoxFuture<'a, Result<(), ContractProblem>> {
        Box::pin(async { Ok(()) })
    }
}

/// A [`Backend`] speaking JSON over HTTP through protocol `P`.
pub(crate) struct HttpJsonBackend<P> {
    protocol: P,
    upstream: Upstream,
}

impl<P: JsonProtocol> HttpJsonBackend<P> {
    /// A backend for `protocol`, sending through `upstream`.
    pub(crate) fn new(protocol: P, upstream: Upstream) -> Self {
        HttpJsonBackend { protocol, upstream }
    }
}

impl<P: JsonProtocol> Backend for HttpJsonBackend<P> {
    fn call<'a>(
        &'a self,
        replica: &'a str,
        inputs: &'a RecordBatch,
        contract: &'a Contract,
    ) -> BoxFuture<'a, Result<CallOutput, InferError>> {
        async move {
            let p = &self.protocol;
            let body = p.encode_body(inputs, contract)?;
            let url = join(replica, &p.path());
            let answer = self
                .upstream
                .post_json(&url, body, p.headers(), p.bearer())
                .await?;
            p.decode_answer(&answer, contract, inputs.num_rows())
        }
        .boxed()
    }

    fn max_rows_per_request(&self) -> Option<usize> {
        self.protocol.max_rows_per_request()
    }

    fn selector_syntax(&self) -> SelectorSyntax {
        self.protocol.selector_syntax()
    }

    fn check_contract<'a>(
        &'a self,
        replica: &'a str,
        contract: &'a Contract,
        input_types: &'a [DataType],
    ) -> BoxFuture<'a, Result<(), ContractProblem>> {
        self.protocol
            .check_contract(&self.upstream, replica, contract, input_types)
    }

    fn http_client(&self) -> reqwest::Client {
        self.upstream.client()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::error::ErrorKind;
    use crate::inference::protocol::{OutputBinding, Selector};
    use crate::spec::OutputType;
    use datafusion::arrow::array::{ArrayRef, AsArray, Int64Array};
    use datafusion::arrow::datatypes::Int64Type;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends `{"n": rows}` to `/echo` and reads `/n` back as every row's value.
    struct Echo;

    impl JsonProtocol for Echo {
        fn path(&self) -> Cow<'_, str> {
            Cow::Borrowed("echo")
        }
        fn encode_body(&self, inputs: &RecordBatch, _: &Contract) -> Result<String, InferError> {
            Ok(format!("{{\"n\":{}}}", inputs.num_rows()))
        }
        fn decode_answer(
            &self,
            body: &[u8],
            _: &Contract,
            rows: usize,
        ) -> Result<CallOutput, InferError> {
            let v: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| InferError::contract(e.to_string()))?;
            let n = v["n"].as_i64().unwrap_or(-1);
            Ok(CallOutput::columns(vec![
                Arc::new(Int64Array::from(vec![n; rows])) as ArrayRef,
            ]))
        }
        fn selector_syntax(&self) -> SelectorSyntax {
            SelectorSyntax::Pointer
        }
    }

    /// A one-shot HTTP server answering `status` with `body`; returns its base URL and the
    /// request it received.
    async fn serve_once(
        status: u16,
        body: &'static str,
    ) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/base/", listener.local_addr().unwrap());
        let served = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then the body announced by Content-Length.
            loop {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request);
                if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if rest.len() >= len {
                        break;
                    }
                }
            }
            let answer = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8(request).unwrap()
        });
        (url, served)
    }

    fn contract() -> Contract {
        Contract {
            inputs: vec!["x".into()],
            outputs: vec![OutputBinding {
                column: "n".into(),
                selector: Selector::Pointer("/n".into()),
                data_type: OutputType::Int64,
            }],
        }
    }

    fn rows(n: i64) -> RecordBatch {
        RecordBatch::try_from_iter(vec![(
            "x",
            Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
        )])
        .unwrap()
    }

    #[tokio::test]
    async fn encodes_posts_to_the_joined_path_and_decodes() {
        let (url, served) = serve_once(200, r#"{"n":7}"#).await;
        let backend = HttpJsonBackend::new(Echo, Upstream::shared());
        let out = backend.call(&url, &rows(3), &contract()).await.unwrap();
        assert_eq!(
            out.columns[0].as_primitive::<Int64Type>().values(),
            &[7, 7, 7]
        );
        let request = served.await.unwrap();
        assert!(request.starts_with("POST /base/echo HTTP/1.1"), "{request}");
        assert!(
            request.contains("content-type: application/json"),
            "{request}"
        );
        assert!(request.ends_with(r#"{"n":3}"#), "{request}");
    }

    #[tokio::test]
    async fn an_error_status_is_classified_by_the_transport() {
        let (url, _served) = serve_once(503, "busy").await;
        let err = HttpJsonBackend::new(Echo, Upstream::shared())
            .call(&url, &rows(1), &contract())
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
        assert_eq!(err.message, "HTTP 503: busy");
    }
}
