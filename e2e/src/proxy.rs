//! An HTTP/1.1 proxy in front of a real server (MinIO) that injects one fault a real server
//! cannot produce on demand: it forwards a matching request, lets the server carry it out, and
//! then drops the connection instead of passing the response on (a response lost on the way
//! back, as after a network cut or a load balancer restart). Everything else is forwarded as it
//! is, request by request, so signed requests stay valid.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Which requests lose their response.
pub type Matcher = dyn Fn(&str, &str) -> bool + Send + Sync;

/// A running proxy; it stops when dropped.
pub struct LossyProxy {
    /// `http://127.0.0.1:PORT`, to use as the endpoint instead of the server's.
    pub endpoint: String,
    dropped: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl LossyProxy {
    /// Proxies to `upstream` (`host:port`); the first `budget` requests for which
    /// `matcher(method, path)` holds reach the server, and their responses are dropped.
    pub async fn start(
        upstream: &str,
        budget: usize,
        matcher: Box<Matcher>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let dropped = Arc::new(AtomicUsize::new(0));
        let state = Arc::new(State {
            upstream: upstream.to_string(),
            budget,
            dropped: dropped.clone(),
            matcher,
        });
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = state.serve(client).await {
                        tracing::debug!(error = %e, "proxy connection ended");
                    }
                });
            }
        });
        Ok(Self {
            endpoint,
            dropped,
            task,
        })
    }

    /// How many responses were dropped so far.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    upstream: String,
    budget: usize,
    dropped: Arc<AtomicUsize>,
    matcher: Box<Matcher>,
}

impl State {
    async fn serve(&self, client: TcpStream) -> std::io::Result<()> {
        let mut upstream = BufReader::new(TcpStream::connect(&self.upstream).await?);
        let mut client = BufReader::new(client);
        loop {
            let Some(request) = read_message(&mut client, None).await? else {
                return Ok(());
            };
            let (method, path) = request_line(&request.head);
            let lose = (self.matcher)(&method, &path)
                && self
                    .dropped
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                        (n < self.budget).then_some(n + 1)
                    })
                    .is_ok();
            upstream.get_mut().write_all(&request.head).await?;
            upstream.get_mut().write_all(&request.body).await?;
            let Some(response) = read_message(&mut upstream, Some(&method)).await? else {
                return Ok(());
            };
            if lose {
                tracing::info!(%method, %path, "proxy: the server answered; dropping the response");
                return Ok(()); // both connections close unanswered
            }
            client.get_mut().write_all(&response.head).await?;
            client.get_mut().write_all(&response.body).await?;
        }
    }
}

struct Message {
    head: Vec<u8>,
    body: Vec<u8>,
}

fn request_line(head: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(head);
    let mut words = text.split_whitespace();
    let method = words.next().unwrap_or_default().to_string();
    let path = words.next().unwrap_or_default().to_string();
    (method, path)
}

/// Reads one request (`request_method` None) or one response to a request of that method:
/// the head up to the blank line, then the body by Content-Length or chunked encoding.
async fn read_message<R: AsyncBufReadExt + Unpin>(
    r: &mut R,
    request_method: Option<&str>,
) -> std::io::Result<Option<Message>> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = r.read_until(b'\n', &mut head).await?;
        if n == 0 {
            return Ok(None);
        }
        if &head[before..] == b"\r\n" || &head[before..] == b"\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let header = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
            .map(str::to_string)
    };
    let status: u16 = if request_method.is_some() {
        text.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    } else {
        0
    };
    let no_body = request_method == Some("HEAD") || status == 204 || status == 304;
    let mut body = Vec::new();
    if no_body {
    } else if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut size_line = Vec::new();
            r.read_until(b'\n', &mut size_line).await?;
            body.extend_from_slice(&size_line);
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&size_line)
                    .trim()
                    .split(';')
                    .next()
                    .unwrap_or("0"),
                16,
            )
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).await?;
            body.extend_from_slice(&chunk);
            if size == 0 {
                break;
            }
        }
    } else if let Some(length) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        body.resize(length, 0);
        r.read_exact(&mut body).await?;
    }
    Ok(Some(Message { head, body }))
}
