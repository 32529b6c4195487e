//! An OpenSSH server started per test, and the real `ssh` client pointed at the gateway.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{Gateway, free_port};

/// A private OpenSSH server on a free port: its own host key, one authorized key, root login
/// with that key only.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub child: Child,
}

pub fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "tollgate-test", "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Sshd {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("user_key"));
        std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nUsePAM no\nStrictModes no\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nAllowTcpForwarding yes\n\
             Subsystem sftp /usr/lib/openssh/sftp-server\nLogLevel VERBOSE\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut sshd = Self { dir, port, child };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let mut banner = [0u8; 7];
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                if s.read_exact(&mut banner).is_ok() && &banner == b"SSH-2.0" {
                    return sshd;
                }
            }
            if let Some(status) = sshd.child.try_wait().unwrap() {
                panic!("sshd exited with {status}: {}", sshd.log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not start: {}",
                sshd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The host key line sshd presents (`ssh-ed25519 AAAA… comment`).
    pub fn host_key(&self) -> String {
        std::fs::read_to_string(self.path("host_key.pub"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// A `[[connections]]` block for this server as root, pinned to `host_key`.
    pub fn connection(&self, name: &str, host_key: &str) -> String {
        format!(
            "[[connections]]\nname = \"{name}\"\nkind = \"ssh\"\nurl = \"ssh://root@127.0.0.1:{}\"\nprivate_key_file = \"{}\"\nhost_key = \"{host_key}\"\ngroups = [\"ops\"]\n\n",
            self.port,
            self.path("user_key").display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Options of every `ssh` run against the gateway: no config file, the gateway's host key
/// taken on trust, the token as the password.
pub const SSH_OPTIONS: [&str; 10] = [
    "-F",
    "/dev/null",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "PreferredAuthentications=password",
    "-o",
    "ConnectTimeout=10",
];

/// The real `ssh` client through the gateway, the token given as the password by `sshpass`.
pub fn ssh(gw: &Gateway, token: &str, user: &str, opts: &[&str], remote: &[&str]) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["60", "sshpass", "-e", "ssh"])
        .args(SSH_OPTIONS)
        .args(["-o", "NumberOfPasswordPrompts=1", "-p"])
        .arg(gw.ssh_port.to_string())
        .args(opts)
        .arg(format!("{user}@127.0.0.1"))
        .args(remote)
        .env("SSHPASS", token)
        .stdin(Stdio::null());
    cmd
}

pub fn run(mut cmd: Command) -> Output {
    cmd.output().unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The events of the newest session that matches (waiting a little: events are written
/// asynchronously).
pub fn events_where(
    gw: &Gateway,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for s in gw.sessions() {
            let detail = gw.session(s["id"].as_str().unwrap());
            let events = detail["events"].as_array().unwrap().clone();
            if events.iter().any(|e| pred(&e["kind"]))
                && events
                    .last()
                    .is_some_and(|e| e["kind"]["type"] == "session_end")
            {
                return events;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no ended session has such an event"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a PTY session driven by [`ssh_pty`] showed, and how `ssh` exited.
pub struct PtyTranscript {
    /// Everything the terminal received.
    pub output: String,
    /// The exit status of `ssh`.
    pub status: Option<i32>,
}

/// Drives the real `ssh -t` client through a real pseudo-terminal (80x24 at the start), as a
/// person would: `("send", text)` types text, `("expect", text)` waits up to 20 s for it to
/// appear, `("resize", "ROWS COLS")` resizes the terminal (the kernel tells `ssh`, which sends a
/// window-change). Then waits for `ssh` to end.
pub fn ssh_pty(gw: &Gateway, token: &str, user: &str, steps: &[(&str, &str)]) -> PtyTranscript {
    const DRIVER: &str = r#"
import json, os, pty, select, struct, sys, time, fcntl, termios
steps = json.loads(sys.argv[1]); argv = sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
seen = b""
def read(timeout):
    global seen
    r, _, _ = select.select([fd], [], [], timeout)
    if not r:
        return False
    try:
        chunk = os.read(fd, 65536)
    except OSError:
        return None
    if not chunk:
        return None
    seen += chunk
    return True
mark = 0
for kind, arg in steps:
    if kind == "send":
        os.write(fd, arg.encode())
    elif kind == "resize":
        rows, cols = map(int, arg.split())
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        time.sleep(0.2)
    elif kind == "expect":
        deadline = time.time() + 20
        while arg.encode() not in seen[mark:]:
            if time.time() > deadline or read(deadline - time.time()) is None:
                sys.stdout.write(json.dumps({"output": seen.decode("utf-8", "replace"), "status": None, "failed": arg}))
                os.kill(pid, 9)
                sys.exit(0)
        mark = seen.index(arg.encode(), mark) + len(arg)
deadline = time.time() + 20
while time.time() < deadline and read(deadline - time.time()) is not None:
    pass
_, status = os.waitpid(pid, 0)
code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
sys.stdout.write(json.dumps({"output": seen.decode("utf-8", "replace"), "status": code}))
"#;
    let steps = serde_json::to_string(steps).unwrap();
    let out = Command::new("python3")
        .args(["-c", DRIVER, &steps])
        .args(["sshpass", "-e", "ssh"])
        .args(SSH_OPTIONS)
        .args(["-o", "LogLevel=ERROR", "-t", "-p"])
        .arg(gw.ssh_port.to_string())
        .arg(format!("{user}@127.0.0.1"))
        .env("SSHPASS", token)
        .env("TERM", "xterm-256color")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let output = v["output"].as_str().unwrap_or_default().to_string();
    if let Some(missing) = v["failed"].as_str() {
        panic!(
            "the terminal never showed {missing:?}:\n{output}\n--- gateway log ---\n{}",
            gw.stderr()
        );
    }
    PtyTranscript {
        output,
        status: v["status"].as_i64().map(|s| s as i32),
    }
}

/// Waits for the pending approval of `statement` and decides it as an administrator.
pub fn decide_when_pending(gw: &Gateway, statement: &str, decision: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list: Vec<serde_json::Value> =
            serde_json::from_str(&gw.cli_ok(super::ADMIN_KEY, &["approvals", "list", "--json"]))
                .unwrap();
        if let Some(a) = list
            .iter()
            .find(|a| a["statement"] == statement && a["status"] == "pending")
        {
            let id = a["id"].as_str().unwrap().to_string();
            let mut args = vec!["approvals"];
            args.extend_from_slice(&decision[..1]);
            args.push(&id);
            args.extend_from_slice(&decision[1..]);
            gw.cli_ok(super::ADMIN_KEY, &args);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no pending approval for {statement}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
