//! Faults that need a private network namespace: iptables DROP (black hole),
//! an unreachable network (loopback down), a resolver that never answers and
//! one that answers NXDOMAIN to everything.
//!
//! A test cannot move itself into a namespace safely (other test threads
//! share the process), so it re-executes itself inside one:
//!
//! ```no_run
//! use dialpool_testkit::netns::{self, NetnsSpec};
//!
//! #[test]
//! fn black_hole() {
//!     if !netns::enter("black_hole", NetnsSpec::default()) {
//!         return; // outside: the test ran in the namespace (or was skipped)
//!     }
//!     // inside the namespace, as root, with its own loopback and netfilter
//!     netns::drop_tcp_port(5432).unwrap();
//! }
//! ```
//!
//! Outside, [`enter`] creates `dptest-<pid>-<n>`, runs
//! `ip netns exec NAME <this test binary> --exact <test> --nocapture
//! --test-threads=1` with `DIALPOOL_NETNS_INNER=<test>`, streams the child's
//! output, deletes the namespace (also on failure) and panics if the child
//! failed. This works the same under `cargo test` and `cargo nextest run`,
//! which both drive the libtest binary with these arguments. Inside, [`enter`]
//! starts the fake resolver the spec asks for (it lives until the inner
//! process exits) and returns true.
//!
//! Everything stays inside the namespace: it has no interface but its own
//! loopback, so no packet can leave the machine, and the host's firewall and
//! resolver are never touched.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::skip;
use crate::util::{find_executable, is_root, pid_alive, tail_text};

/// Env var that tells the re-executed test binary it runs inside the
/// namespace, and for which test.
pub const ENV_INNER: &str = "DIALPOOL_NETNS_INNER";
/// Name prefix of every namespace this crate creates; the owner pid follows.
pub const NAME_PREFIX: &str = "dptest-";
/// The inner test run is killed after this long.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// What `/etc/resolv.conf` and port 53 look like inside the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resolver {
    /// The host's resolv.conf (its name server is unreachable from inside,
    /// so lookups other than /etc/hosts fail). Use when DNS does not matter.
    #[default]
    System,
    /// `nameserver 127.0.0.1`, `options timeout:2 attempts:1`, and a UDP and
    /// TCP socket on 127.0.0.1:53 that never answer: getaddrinfo hangs ~2 s
    /// per attempt and then fails with EAI_AGAIN.
    Silent,
    /// Same resolv.conf, and a responder that answers every query with
    /// NXDOMAIN: getaddrinfo fails at once with EAI_NONAME.
    NxDomain,
}

/// How to set up the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetnsSpec {
    /// Bring `lo` up. When false, any connect (even to 127.0.0.1) fails with
    /// ENETUNREACH. A fake resolver needs loopback, so a resolver other than
    /// [`Resolver::System`] brings `lo` up regardless.
    pub loopback_up: bool,
    /// Which resolver the namespace sees.
    pub resolver: Resolver,
}

impl Default for NetnsSpec {
    /// Loopback up, system resolver.
    fn default() -> Self {
        NetnsSpec {
            loopback_up: true,
            resolver: Resolver::System,
        }
    }
}

/// True in a test binary that [`enter`] re-executed inside a namespace.
pub fn inside() -> bool {
    std::env::var_os(ENV_INNER).is_some()
}

/// Runs the calling test inside a fresh network namespace.
///
/// Outside: when not root or without `ip` (or when namespaces cannot be
/// created), calls [`skip`] and returns false. Otherwise re-runs this test in
/// a namespace set up per `spec` (see the module docs), streams its output,
/// cleans up, panics if it failed and returns false.
///
/// Inside (env `DIALPOOL_NETNS_INNER` names this test): starts the resolver
/// of `spec` and returns true, so the test body runs there.
///
/// `test_name` is the test's function name; the full libtest path (e.g.
/// `faults::black_hole`) is taken from the test thread's name when it ends
/// with `test_name`, so tests in modules work too.
pub fn enter(test_name: &str, spec: NetnsSpec) -> bool {
    let full_name = libtest_name(test_name);
    if let Some(inner) = std::env::var_os(ENV_INNER) {
        let inner = inner.to_string_lossy();
        if inner != full_name && inner != test_name {
            panic!(
                "netns::enter({test_name:?}) called inside the namespace of test {inner:?}: \
                 nested namespaces are not supported"
            );
        }
        start_inner_resolver(spec.resolver);
        return true;
    }

    if !is_root() {
        skip(test_name, "needs root to create a network namespace");
        return false;
    }
    let Some(ip) = find_executable("ip") else {
        skip(test_name, "the `ip` command (iproute2) is not installed");
        return false;
    };
    cleanup_stale();

    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{NAME_PREFIX}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    if let Err(e) = ip_cmd(&ip, &["netns", "add", &name]) {
        skip(
            test_name,
            &format!("cannot create a network namespace: {e}"),
        );
        return false;
    }
    let ns = NamespaceGuard {
        ip: ip.clone(),
        name: name.clone(),
    };
    if spec.loopback_up || spec.resolver != Resolver::System {
        if let Err(e) = ip_cmd(&ip, &["-n", &name, "link", "set", "lo", "up"]) {
            panic!("cannot bring up lo in namespace {name}: {e}");
        }
    }
    if spec.resolver != Resolver::System {
        let dir = ns.etc_dir();
        let conf = "# dialpool testkit: fake resolver inside the namespace\n\
                    nameserver 127.0.0.1\noptions timeout:2 attempts:1\n";
        if let Err(e) =
            fs::create_dir_all(&dir).and_then(|()| fs::write(dir.join("resolv.conf"), conf))
        {
            panic!("cannot write {}/resolv.conf: {e}", dir.display());
        }
    }

    let exe = std::env::current_exe()
        .unwrap_or_else(|e| panic!("cannot find the current test executable: {e}"));
    let mut cmd = Command::new(&ip);
    cmd.args(["netns", "exec", &name])
        .arg(&exe)
        .args([
            "--exact",
            &full_name,
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(ENV_INNER, &full_name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("testkit: running {full_name} inside network namespace {name}");
    let outcome = run_streaming(cmd, &name);
    drop(ns);
    match outcome {
        Ok(output) if !output.contains("running 1 test") => panic!(
            "the inner run in namespace {name} did not run exactly one test; is {full_name:?} \
             the test's libtest name?\n{}",
            tail_text(&output, 40)
        ),
        Ok(_) => false,
        Err(e) => panic!("{full_name} failed inside network namespace {name}: {e}"),
    }
}

/// The libtest name of the running test: the thread name when it is
/// `test_name` or ends with `::test_name`.
fn libtest_name(test_name: &str) -> String {
    match thread::current().name() {
        Some(n) if n == test_name || n.ends_with(&format!("::{test_name}")) => n.to_string(),
        _ => test_name.to_string(),
    }
}

fn ip_cmd(ip: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new(ip)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Deletes the namespace and its /etc/netns dir when dropped.
struct NamespaceGuard {
    ip: PathBuf,
    name: String,
}

impl NamespaceGuard {
    fn etc_dir(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.name)
    }
}

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        if let Err(e) = ip_cmd(&self.ip, &["netns", "del", &self.name]) {
            eprintln!("testkit: {e}");
        }
        let dir = self.etc_dir();
        if dir.exists() {
            if let Err(e) = fs::remove_dir_all(&dir) {
                eprintln!("testkit: cannot remove {}: {e}", dir.display());
            }
        }
    }
}

/// Runs the inner test, forwarding its output line by line (through the
/// print macros, so libtest's capture applies to the outer test), with a
/// bounded wait. Returns the combined output, or Err with it on failure.
fn run_streaming(mut cmd: Command, ns: &str) -> Result<String, String> {
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run `ip netns exec {ns}`: {e}"))?;
    let collected = Arc::new(Mutex::new(String::new()));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut readers = 0;
    if let Some(out) = child.stdout.take() {
        spawn_forwarder(out, false, collected.clone(), done_tx.clone());
        readers += 1;
    }
    if let Some(err) = child.stderr.take() {
        spawn_forwarder(err, true, collected.clone(), done_tx.clone());
        readers += 1;
    }
    drop(done_tx);

    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for the inner test: {e}")),
        }
    };
    // The pipes close when the child exits; bound the wait anyway.
    for _ in 0..readers {
        if done_rx.recv_timeout(Duration::from_secs(5)).is_err() {
            break;
        }
    }
    let output = collected.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match status {
        Some(s) if s.success() => Ok(output),
        Some(s) => Err(format!(
            "inner test exited with {s}:\n{}",
            tail_text(&output, 60)
        )),
        None => Err(format!(
            "inner test killed after {}s:\n{}",
            CHILD_TIMEOUT.as_secs(),
            tail_text(&output, 60)
        )),
    }
}

fn spawn_forwarder(
    pipe: impl Read + Send + 'static,
    is_stderr: bool,
    collected: Arc<Mutex<String>>,
    done: mpsc::Sender<()>,
) {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if is_stderr {
                eprintln!("  [netns] {line}");
            } else {
                println!("  [netns] {line}");
            }
            let mut c = collected.lock().unwrap_or_else(|p| p.into_inner());
            c.push_str(&line);
            c.push('\n');
        }
        let _ = done.send(());
    });
}

/// Deletes `dptest-*` namespaces (and their /etc/netns dirs) whose owner
/// process no longer exists: left behind when a test process was killed
/// before its cleanup ran. Called by [`enter`]; harmless to call any time.
pub fn cleanup_stale() {
    let Some(ip) = find_executable("ip") else {
        return;
    };
    let mut names: Vec<String> = Vec::new();
    for dir in ["/run/netns", "/etc/netns"] {
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                if let Some(n) = e.file_name().to_str() {
                    if n.starts_with(NAME_PREFIX) && !names.iter().any(|x| x == n) {
                        names.push(n.to_string());
                    }
                }
            }
        }
    }
    for name in names {
        let owner = name[NAME_PREFIX.len()..]
            .split('-')
            .next()
            .and_then(|p| p.parse::<i32>().ok());
        if owner.is_some_and(pid_alive) {
            continue;
        }
        if Path::new("/run/netns").join(&name).exists() {
            let _ = ip_cmd(&ip, &["netns", "del", &name]);
        }
        let _ = fs::remove_dir_all(Path::new("/etc/netns").join(&name));
    }
}

/// Refuses to run firewall or link changes outside a namespace of ours:
/// the same commands on the host would cut the machine's own traffic.
fn require_inside(what: &str) -> Result<(), String> {
    if inside() {
        Ok(())
    } else {
        Err(format!(
            "{what} only works inside netns::enter (env {ENV_INNER} unset); refusing to change \
             the host's network"
        ))
    }
}

/// Inside a namespace: drops every incoming TCP packet to `port` (new SYNs
/// and established connections alike), i.e. `iptables -A INPUT -p tcp
/// --dport PORT -j DROP` in the namespace's own netfilter tables. Tries
/// `iptables`, then `iptables-legacy`, then `nft`, and says on stderr when a
/// fallback was needed; Err with every tool's stderr when all fail.
pub fn drop_tcp_port(port: u16) -> Result<(), String> {
    require_inside("drop_tcp_port")?;
    firewall(port, true)
}

/// Inside a namespace: removes the rule [`drop_tcp_port`] added, so the
/// black hole lifts (with the nft fallback this removes all such rules).
pub fn undrop_tcp_port(port: u16) -> Result<(), String> {
    require_inside("undrop_tcp_port")?;
    firewall(port, false)
}

fn firewall(port: u16, add: bool) -> Result<(), String> {
    let port_s = port.to_string();
    let op = if add { "-A" } else { "-D" };
    let rule = ["INPUT", "-p", "tcp", "--dport", &port_s, "-j", "DROP"];
    let mut errors = Vec::new();
    for (i, tool) in ["iptables", "iptables-legacy"].iter().enumerate() {
        let Some(path) = find_executable(tool) else {
            errors.push(format!("{tool}: not installed"));
            continue;
        };
        match run_tool(Command::new(path).arg("-w").arg(op).args(rule)) {
            Ok(()) => {
                if i > 0 {
                    eprintln!(
                        "testkit: iptables failed ({}); used {tool}",
                        errors.join("; ")
                    );
                }
                return Ok(());
            }
            Err(e) => errors.push(format!("{tool}: {e}")),
        }
    }
    if let Some(nft) = find_executable("nft") {
        let script = if add {
            format!(
                "add table inet dptest\n\
                 add chain inet dptest input {{ type filter hook input priority 0 ; policy accept ; }}\n\
                 add rule inet dptest input tcp dport {port} drop\n"
            )
        } else {
            "delete table inet dptest\n".to_string()
        };
        let mut cmd = Command::new(nft);
        cmd.args(["-f", "-"]);
        match run_tool_stdin(cmd, &script) {
            Ok(()) => {
                eprintln!("testkit: iptables failed ({}); used nft", errors.join("; "));
                return Ok(());
            }
            Err(e) => errors.push(format!("nft: {e}")),
        }
    } else {
        errors.push("nft: not installed".into());
    }
    Err(format!(
        "could not {} a DROP rule for tcp port {port}: {}",
        if add { "add" } else { "remove" },
        errors.join("; ")
    ))
}

fn run_tool(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn run_tool_stdin(mut cmd: Command, input: &str) -> Result<(), String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Inside a namespace: takes its loopback down (connects then fail with
/// ENETUNREACH) or up again, e.g. to cut the network under a live pool.
pub fn set_loopback(up: bool) -> Result<(), String> {
    require_inside("set_loopback")?;
    let ip = find_executable("ip").ok_or("the `ip` command is not installed")?;
    ip_cmd(&ip, &["link", "set", "lo", if up { "up" } else { "down" }])
}

/// A fake DNS server on 127.0.0.1:53 (UDP and TCP); stops on Drop.
#[derive(Debug)]
pub struct FakeResolver {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    _sockets: Option<(UdpSocket, TcpListener)>,
}

impl Drop for FakeResolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn bind_53() -> io::Result<(UdpSocket, TcpListener)> {
    let ctx = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("cannot bind 127.0.0.1:53 for the fake resolver: {e}"),
        )
    };
    let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 53)).map_err(ctx)?;
    let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 53)).map_err(ctx)?;
    Ok((udp, tcp))
}

/// Binds 127.0.0.1:53 (UDP and TCP) and never answers. The sockets must
/// exist: without them the kernel answers with ICMP port unreachable and the
/// lookup fails fast instead of hanging. Needs root (port 53), i.e. use it
/// inside a namespace; [`enter`] starts it for [`Resolver::Silent`].
pub fn start_silent_resolver() -> io::Result<FakeResolver> {
    let sockets = bind_53()?;
    Ok(FakeResolver {
        stop: Arc::new(AtomicBool::new(false)),
        threads: Vec::new(),
        _sockets: Some(sockets),
    })
}

/// Binds 127.0.0.1:53 (UDP and TCP) and answers every query with NXDOMAIN
/// (same id and question; flags QR, RD, RA, rcode 3), so getaddrinfo fails
/// with EAI_NONAME deterministically and without any outside network. TCP is
/// served too because glibc retries over TCP when it sees a truncated answer.
/// [`enter`] starts it for [`Resolver::NxDomain`].
pub fn start_nxdomain_resolver() -> io::Result<FakeResolver> {
    let (udp, tcp) = bind_53()?;
    udp.set_read_timeout(Some(Duration::from_millis(100)))?;
    tcp.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let udp_thread = thread::Builder::new()
        .name("testkit-dns-udp".into())
        .spawn(move || {
            let mut buf = [0u8; 1500];
            while !st.load(Ordering::SeqCst) {
                if let Ok((n, from)) = udp.recv_from(&mut buf) {
                    if let Some(reply) = nxdomain_reply(&buf[..n]) {
                        let _ = udp.send_to(&reply, from);
                    }
                }
            }
        })?;
    let st = stop.clone();
    let tcp_thread = thread::Builder::new()
        .name("testkit-dns-tcp".into())
        .spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match tcp.accept() {
                    Ok((s, _)) => serve_dns_tcp(s),
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        })?;
    Ok(FakeResolver {
        stop,
        threads: vec![udp_thread, tcp_thread],
        _sockets: None,
    })
}

/// Answers length-prefixed queries on one TCP connection until EOF, error
/// or 2 s of silence.
fn serve_dns_tcp(mut s: TcpStream) {
    if s.set_nonblocking(false).is_err()
        || s.set_read_timeout(Some(Duration::from_secs(2))).is_err()
    {
        return;
    }
    for _ in 0..64 {
        let mut len = [0u8; 2];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
        if s.read_exact(&mut q).is_err() {
            return;
        }
        let Some(r) = nxdomain_reply(&q) else { return };
        let mut msg = (r.len() as u16).to_be_bytes().to_vec();
        msg.extend_from_slice(&r);
        if s.write_all(&msg).is_err() {
            return;
        }
    }
}

/// Builds an NXDOMAIN response to `query`: header with the query's id and
/// opcode, QR+RD+RA and rcode 3, and the first question echoed. None when
/// the query is malformed.
pub(crate) fn nxdomain_reply(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let qdcount = u16::from_be_bytes([query[4], query[5]]);
    let mut end = 12;
    if qdcount > 0 {
        loop {
            let l = *query.get(end)? as usize;
            end += 1;
            if l == 0 {
                break;
            }
            if l & 0xC0 != 0 {
                return None;
            }
            end += l;
        }
        end += 4; // QTYPE, QCLASS
        if end > query.len() {
            return None;
        }
    }
    let mut r = Vec::with_capacity(end);
    r.extend_from_slice(&query[0..2]);
    r.push(0x80 | (query[2] & 0x78) | 0x01); // QR, opcode, RD
    r.push(0x80 | 0x03); // RA, NXDOMAIN
    r.extend_from_slice(&[0, u8::from(qdcount > 0), 0, 0, 0, 0, 0, 0]);
    r.extend_from_slice(&query[12..end]);
    Some(r)
}

/// Starts the resolver of the spec once per inner process; it stays up until
/// the process exits (the inner process runs just this one test).
fn start_inner_resolver(resolver: Resolver) {
    static STARTED: OnceLock<FakeResolver> = OnceLock::new();
    let start = match resolver {
        Resolver::System => return,
        Resolver::Silent => start_silent_resolver,
        Resolver::NxDomain => start_nxdomain_resolver,
    };
    if STARTED.get().is_some() {
        return;
    }
    match start() {
        Ok(r) => {
            let _ = STARTED.set(r);
        }
        Err(e) => panic!("cannot start the {resolver:?} resolver in the namespace: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::nxdomain_reply;

    #[test]
    fn nxdomain_reply_echoes_id_and_question() {
        // id 0xabcd, RD, 1 question: "a.test" A IN
        let q = [
            0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 4, b't', b'e', b's', b't', 0,
            0, 1, 0, 1,
        ];
        let r = nxdomain_reply(&q).expect("reply");
        assert_eq!(&r[0..4], &[0xab, 0xcd, 0x81, 0x83]);
        assert_eq!(&r[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&r[12..], &q[12..]);
        assert!(nxdomain_reply(&q[..14]).is_none());
    }
}
