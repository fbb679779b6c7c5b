//! A small HTTPS server for the feeds test: a CA generated at start (its PEM file is what
//! `--ca-file` gets), a certificate for 127.0.0.1 signed by it, and routes the test sets and
//! changes while the server runs. HTTP/1.1, one request per connection.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types};

/// What a path answers.
#[derive(Clone, Debug)]
pub enum Body {
    /// These bytes, with their Content-Length.
    Bytes(Vec<u8>),
    /// `size` bytes of prefix lines, with a Content-Length of `size` when `length` is set, else
    /// until the connection closes (so the client only learns the size by reading).
    Large { size: usize, length: bool },
}

#[derive(Clone, Debug)]
pub struct Route {
    pub body: Body,
    /// A `Last-Modified` header.
    pub last_modified: Option<String>,
}

impl Route {
    pub fn bytes(body: impl Into<Vec<u8>>) -> Route {
        Route {
            body: Body::Bytes(body.into()),
            last_modified: None,
        }
    }

    pub fn modified(mut self, http_date: &str) -> Route {
        self.last_modified = Some(http_date.to_owned());
        self
    }
}

/// A running server; it stops with the test process.
pub struct HttpsServer {
    pub addr: SocketAddr,
    /// The CA certificate, PEM.
    pub ca_pem: String,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    /// Requests answered, by path.
    hits: Arc<Mutex<Vec<String>>>,
}

impl HttpsServer {
    /// Starts on 127.0.0.1 (a free port) on a thread of its own.
    pub fn start() -> Result<HttpsServer> {
        let ca_key = KeyPair::generate().context("CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA params")?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "enforcer feeds test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).context("CA certificate")?;
        let key = KeyPair::generate().context("server key")?;
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let certificate = params.signed_by(&key, &ca).context("server certificate")?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_no_client_auth()
            .with_single_cert(
                vec![certificate.der().clone(), ca.der().clone()],
                pki_types::PrivateKeyDer::Pkcs8(pki_types::PrivatePkcs8KeyDer::from(
                    key.serialize_der(),
                )),
            )
            .context("TLS config")?;
        let acceptor = TlsAcceptor::from(Arc::new(config));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let hits: Arc<Mutex<Vec<String>>> = Arc::default();
        let (thread_routes, thread_hits) = (Arc::clone(&routes), Arc::clone(&hits));
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    let routes = Arc::clone(&thread_routes);
                    let hits = Arc::clone(&thread_hits);
                    tokio::spawn(async move {
                        // Handshake failures (a client without the CA) just end the connection.
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            let _ = serve(tls, &routes, &hits).await;
                        }
                    });
                }
            });
        });
        Ok(HttpsServer {
            addr,
            ca_pem: ca.pem(),
            routes,
            hits,
        })
    }

    /// `https://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// Sets what `path` (without the query) answers.
    pub fn route(&self, path: &str, route: Route) {
        self.routes.lock().unwrap().insert(path.to_owned(), route);
    }

    pub fn remove(&self, path: &str) {
        self.routes.lock().unwrap().remove(path);
    }

    /// Writes the CA certificate to `path`.
    pub fn write_ca(&self, path: &Path) -> Result<()> {
        std::fs::write(path, &self.ca_pem).context("writing the CA file")
    }

    /// The paths requested so far.
    pub fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

async fn serve<S>(
    mut stream: S,
    routes: &Mutex<HashMap<String, Route>>,
    hits: &Mutex<Vec<String>>,
) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || request.len() > 65_536 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&request);
    let target = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let path = target.split('?').next().unwrap_or("/").to_owned();
    hits.lock().unwrap().push(path.clone());
    let route = routes.lock().unwrap().get(&path).cloned();
    let Some(route) = route else {
        let body = b"not found\n";
        let head = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        return stream.shutdown().await;
    };
    let mut head = String::from("HTTP/1.1 200 OK\r\nConnection: close\r\n");
    if let Some(date) = &route.last_modified {
        head.push_str(&format!("Last-Modified: {date}\r\n"));
    }
    match route.body {
        Body::Bytes(bytes) => {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", bytes.len()));
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&bytes).await?;
        }
        Body::Large { size, length } => {
            if length {
                head.push_str(&format!("Content-Length: {size}\r\n"));
            }
            head.push_str("\r\n");
            stream.write_all(head.as_bytes()).await?;
            // Valid lines, so only the size can refuse it.
            let line = b"198.51.100.0/24\n";
            let chunk: Vec<u8> = line
                .iter()
                .copied()
                .cycle()
                .take(64 * line.len() * 64)
                .collect();
            let mut sent = 0;
            while sent < size {
                let n = chunk.len().min(size - sent);
                // The client hangs up once it has seen enough: that ends the answer.
                stream.write_all(&chunk[..n]).await?;
                sent += n;
            }
        }
    }
    stream.shutdown().await
}
