//! bare-proxy LISTEN_ADDR BACKEND_BASE_URL: forwards every request (method, path, body and
//! content type) to BACKEND_BASE_URL + path with a shared reqwest client (the same settings
//! as streamgate's), and answers with the backend's status, content type and body. No
//! authentication, routing, metrics, limits or retries: the floor for a hyper + reqwest proxy.
//! Prints `url=http://ADDR` once listening.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().expect("listen address");
    let backend: &'static str = Box::leak(
        args.next()
            .expect("backend base URL")
            .trim_end_matches('/')
            .to_string()
            .into_boxed_str(),
    );
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    let listener = tokio::net::TcpListener::bind(&listen).await.expect("bind");
    println!("url=http://{}", listener.local_addr().expect("addr"));
    loop {
        let Ok((io, _)) = listener.accept().await else {
            continue;
        };
        let _ = io.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let client = client.clone();
                async move { Ok::<_, Infallible>(forward(&client, backend, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(io), service)
                .await;
        });
    }
}

async fn forward(
    client: &reqwest::Client,
    backend: &str,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return status(StatusCode::BAD_REQUEST),
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut builder = client.request(parts.method, format!("{backend}{path}"));
    if let Some(ct) = parts.headers.get(hyper::header::CONTENT_TYPE) {
        builder = builder.header(hyper::header::CONTENT_TYPE, ct);
    }
    let response = match builder.body(body).send().await {
        Ok(r) => r,
        Err(_) => return status(StatusCode::BAD_GATEWAY),
    };
    let code = response.status();
    let content_type = response.headers().get(hyper::header::CONTENT_TYPE).cloned();
    let Ok(bytes) = response.bytes().await else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let mut out = Response::new(Full::new(bytes));
    *out.status_mut() = code;
    if let Some(ct) = content_type {
        out.headers_mut().insert(hyper::header::CONTENT_TYPE, ct);
    }
    out
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = code;
    r
}
