//! meshsim's reference Rust sidecar: an HTTP/1.1 reverse proxy on one tokio current-thread
//! runtime (one worker, like linkerd2-proxy's default), hyper 0.14 on both sides, rustls
//! for mutual TLS with the lab CA's certificates.
//!
//! It is the Rust stack of the calibration lab (`meshsim calibrate --proxy-cmd`), not a mesh
//! proxy: one listener, one upstream, no discovery, no policy. Roles, as the lab's sidecars:
//!
//! * `outbound` (client sidecar): plain HTTP in; with `--ca`, mTLS to the upstream.
//! * `inbound` (server sidecar): with `--ca`, mTLS in (client certificates required);
//!   plain HTTP to the upstream.
//!
//! Workload certificates name their SPIFFE identity in a URI SAN only, so the outbound
//! side verifies the peer's chain against the CA and ignores host names (webpki checks
//! DNS names, which these certificates do not carry), as a mesh proxy does before it
//! checks the identity itself.

use std::convert::Infallible;
use std::fs::File;
use std::future::Future;
use std::io::{self, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use hyper::client::connect::{Connected, Connection};
use hyper::header::{HeaderMap, HeaderName};
use hyper::server::conn::Http;
use hyper::service::service_fn;
use hyper::{Body, Client, Request, Response, StatusCode, Uri};
use rustls::client::{ServerCertVerified, ServerCertVerifier};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const USAGE: &str = "usage: meshsim-rust-sidecar --listen HOST:PORT --upstream HOST:PORT \
[--role outbound|inbound] [--mtls on|off --cert FILE --key FILE --ca FILE] \
[--upstream-keepalive on|off]";

static SIG_ALGS: &[&webpki::SignatureAlgorithm] = &[
    &webpki::ECDSA_P256_SHA256,
    &webpki::ECDSA_P256_SHA384,
    &webpki::ECDSA_P384_SHA256,
    &webpki::ECDSA_P384_SHA384,
    &webpki::ED25519,
    &webpki::RSA_PKCS1_2048_8192_SHA256,
    &webpki::RSA_PKCS1_2048_8192_SHA384,
    &webpki::RSA_PKCS1_2048_8192_SHA512,
    &webpki::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
];

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Outbound,
    Inbound,
}

struct Args {
    listen: SocketAddr,
    upstream: SocketAddr,
    role: Role,
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
    upstream_keepalive: bool,
}

fn fail(msg: &str) -> ! {
    eprintln!("meshsim-rust-sidecar: {msg}\n{USAGE}");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut listen = None;
    let mut upstream = None;
    let mut role = Role::Outbound;
    let (mut cert, mut key, mut ca) = (None, None, None);
    let mut upstream_keepalive = true;
    let mut mtls = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--listen" => listen = Some(value()),
            "--upstream" => upstream = Some(value()),
            "--role" => {
                role = match value().as_str() {
                    "outbound" => Role::Outbound,
                    "inbound" => Role::Inbound,
                    other => fail(&format!("--role: expected outbound or inbound, not {other:?}")),
                }
            }
            "--mtls" => {
                mtls = match value().as_str() {
                    "on" => Some(true),
                    "off" => Some(false),
                    other => fail(&format!("--mtls: expected on or off, not {other:?}")),
                }
            }
            "--cert" => cert = Some(PathBuf::from(value())),
            "--key" => key = Some(PathBuf::from(value())),
            "--ca" => ca = Some(PathBuf::from(value())),
            "--upstream-keepalive" => {
                upstream_keepalive = match value().as_str() {
                    "on" => true,
                    "off" => false,
                    other => fail(&format!("--upstream-keepalive: expected on or off, not {other:?}")),
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            other => fail(&format!("unknown argument {other:?}")),
        }
    }
    let addr = |name: &str, v: Option<String>| -> SocketAddr {
        let v = v.unwrap_or_else(|| fail(&format!("{name} is required")));
        v.parse().unwrap_or_else(|_| fail(&format!("{name}: expected HOST:PORT, not {v:?}")))
    };
    // --mtls off leaves the certificates unused, so that one command line serves both the
    // plain and the mTLS configurations of the lab; without --mtls, certificates mean on.
    let tls = match (cert, key, ca) {
        (Some(c), Some(k), Some(a)) => Some((c, k, a)),
        (None, None, None) => None,
        _ => fail("--cert, --key and --ca go together (mTLS)"),
    };
    let tls = match mtls {
        Some(false) => None,
        Some(true) if tls.is_none() => fail("--mtls on needs --cert, --key and --ca"),
        _ => tls,
    };
    Args {
        listen: addr("--listen", listen),
        upstream: addr("--upstream", upstream),
        role,
        tls,
        upstream_keepalive,
    }
}

fn read_certs(path: &Path) -> io::Result<Vec<rustls::Certificate>> {
    let mut rd = BufReader::new(File::open(path)?);
    Ok(rustls_pemfile::certs(&mut rd)?.into_iter().map(rustls::Certificate).collect())
}

fn read_key(path: &Path) -> io::Result<rustls::PrivateKey> {
    let mut rd = BufReader::new(File::open(path)?);
    let mut keys = rustls_pemfile::pkcs8_private_keys(&mut rd)?;
    if keys.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "no PKCS#8 private key"));
    }
    Ok(rustls::PrivateKey(keys.remove(0)))
}

fn bad(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Verifies the server's chain against the lab CA; the identity is a URI SAN, not a name.
struct ChainVerifier {
    anchors: Vec<webpki::TrustAnchor<'static>>,
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::Certificate,
        intermediates: &[rustls::Certificate],
        _server_name: &rustls::ServerName,
        _scts: &mut dyn Iterator<Item = &[u8]>,
        _ocsp_response: &[u8],
        now: SystemTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity.0.as_ref())
            .map_err(|e| rustls::Error::InvalidCertificateData(e.to_string()))?;
        let chain: Vec<&[u8]> = intermediates.iter().map(|c| c.0.as_ref()).collect();
        let time = webpki::Time::try_from(now).map_err(|_| rustls::Error::FailedToGetCurrentTime)?;
        cert.verify_is_valid_tls_server_cert(
            SIG_ALGS,
            &webpki::TlsServerTrustAnchors(&self.anchors),
            &chain,
            time,
        )
        .map_err(|e| rustls::Error::InvalidCertificateData(e.to_string()))?;
        Ok(ServerCertVerified::assertion())
    }
}

fn tls_configs(
    cert: &Path,
    key: &Path,
    ca: &Path,
) -> io::Result<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>)> {
    let chain = read_certs(cert)?;
    let key = read_key(key)?;
    let ca_certs = read_certs(ca)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in &ca_certs {
        roots.add(c).map_err(bad)?;
    }
    let server = rustls::ServerConfig::builder()
        .with_safe_defaults()
        .with_client_cert_verifier(rustls::server::AllowAnyAuthenticatedClient::new(roots))
        .with_single_cert(chain.clone(), key.clone())
        .map_err(bad)?;
    // Trust anchors borrow their DER: keep it for the life of the process.
    let ders: &'static [rustls::Certificate] = Box::leak(ca_certs.into_boxed_slice());
    let anchors = ders
        .iter()
        .map(|c| webpki::TrustAnchor::try_from_cert_der(&c.0).map_err(bad))
        .collect::<io::Result<Vec<_>>>()?;
    let client = rustls::ClientConfig::builder()
        .with_safe_defaults()
        .with_custom_certificate_verifier(Arc::new(ChainVerifier { anchors }))
        .with_single_cert(chain, key)
        .map_err(bad)?;
    Ok((Arc::new(server), Arc::new(client)))
}

/// An upstream connection, plain or mTLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// hyper's connector: every request goes to the one upstream address.
#[derive(Clone)]
struct Upstream {
    addr: SocketAddr,
    tls: Option<TlsConnector>,
}

impl tower_service::Service<Uri> for Upstream {
    type Response = Conn;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Conn>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let addr = self.addr;
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            match tls {
                None => Ok(Conn::Plain(tcp)),
                Some(connector) => {
                    let name = rustls::ServerName::IpAddress(addr.ip());
                    Ok(Conn::Tls(Box::new(connector.connect(name, tcp).await?)))
                }
            }
        })
    }
}

/// Hop-by-hop headers (RFC 9110 section 7.6.1): a proxy does not forward them.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

type HttpClient = Client<Upstream, Body>;

async fn forward(
    client: HttpClient,
    authority: Arc<str>,
    mut req: Request<Body>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let uri: Uri = match format!("http://{authority}{path}").parse() {
        Ok(u) => u,
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    };
    *req.uri_mut() = uri;
    strip_hop_by_hop(req.headers_mut());
    match client.request(req).await {
        Ok(mut resp) => {
            strip_hop_by_hop(resp.headers_mut());
            Ok(resp)
        }
        Err(e) => {
            eprintln!("meshsim-rust-sidecar: upstream {authority}: {e}");
            Ok(status(StatusCode::BAD_GATEWAY))
        }
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = code;
    resp
}

async fn serve(args: Args) -> io::Result<()> {
    let configs = match &args.tls {
        Some((c, k, a)) => Some(tls_configs(c, k, a)?),
        None => None,
    };
    let acceptor = match (&configs, args.role) {
        (Some((server, _)), Role::Inbound) => Some(TlsAcceptor::from(server.clone())),
        _ => None,
    };
    let connector = match (&configs, args.role) {
        (Some((_, client)), Role::Outbound) => Some(TlsConnector::from(client.clone())),
        _ => None,
    };
    let mut builder = Client::builder();
    if !args.upstream_keepalive {
        builder.pool_max_idle_per_host(0);
    }
    let client: HttpClient = builder.build(Upstream { addr: args.upstream, tls: connector });
    let authority: Arc<str> = Arc::from(args.upstream.to_string());
    let listener = TcpListener::bind(args.listen).await?;
    eprintln!("meshsim-rust-sidecar: listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: keep serving the connections we have.
                eprintln!("meshsim-rust-sidecar: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let client = client.clone();
        let authority = authority.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| forward(client.clone(), authority.clone(), req));
            let mut http = Http::new();
            http.http1_only(true);
            let result = match acceptor {
                None => http.serve_connection(tcp, svc).await,
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(tls) => http.serve_connection(tls, svc).await,
                    Err(_) => return, // a failed handshake ends that connection only
                },
            };
            drop(result); // a peer that goes away mid-request is not the proxy's error
        });
    }
}

fn main() {
    let args = parse_args();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("cannot start the runtime: {e}")));
    if let Err(e) = runtime.block_on(serve(args)) {
        eprintln!("meshsim-rust-sidecar: {e}");
        std::process::exit(1);
    }
}
