//! The SSH front against a real OpenSSH `sshd` started by the test, driven by the real `ssh`
//! client: token sign-in, exec with output, stderr and exit codes, an interactive shell through
//! a PTY, refusals (wrong token, wrong pinned host key, port forwarding) and what is recorded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::sshd::{Sshd, decide_when_pending, events_where, keygen, run, ssh, text};
use common::{Gateway, free_port};

#[test]
fn exec_and_shell_are_relayed_and_recorded() {
    let sshd = Sshd::start();
    let gw = Gateway::start(&sshd.connection("box", &sshd.host_key()));
    let token = gw.create_key("ssh-user", "ops", None);

    // The host key is generated, kept private, and its public half published.
    let key_file = gw.data_dir().join("ssh_host_ed25519.key");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let public = std::fs::read_to_string(gw.data_dir().join("ssh_host_ed25519.pub")).unwrap();
    assert!(public.starts_with("ssh-ed25519 "), "{public}");

    // exec: output, exit code 0.
    let out = run(ssh(&gw, &token, "box", &[], &["echo hello"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stderr),
        sshd.log()
    );
    assert_eq!(text(&out.stdout), "hello\n");

    // exit codes come back.
    let out = run(ssh(&gw, &token, "box", &[], &["exit 3"]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));

    // stderr stays stderr.
    let out = run(ssh(
        &gw,
        &token,
        "box",
        &[],
        &["echo to-out; echo to-err >&2; exit 7"],
    ));
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "to-out\n");
    assert!(
        text(&out.stderr).contains("to-err"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("to-err"));

    // A larger output crosses window adjustments intact.
    let out = run(ssh(
        &gw,
        &token,
        "box",
        &[],
        &["head -c 3000000 /dev/zero | tr '\\0' x"],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), 3_000_000);
    assert!(out.stdout.iter().all(|&b| b == b'x'));

    // stdin is relayed, EOF included.
    let mut cmd = ssh(&gw, &token, "box", &[], &["wc -c"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&vec![b'y'; 100_000])
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "100000");

    // An interactive shell through a PTY.
    let mut cmd = ssh(&gw, &token, "box", &["-tt"], &[]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"echo marker-$((6*7)); tty; exit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}\n{}", text(&out.stderr));
    assert!(shown.contains("marker-42"), "{shown}");
    assert!(shown.contains("/dev/pts/"), "{shown}");

    // The record: one session per ssh run, exec commands with their exit status, the shell.
    let sessions = gw.wait_sessions("the ssh sessions", |s| {
        s.iter()
            .filter(|s| s["protocol"] == "ssh" && s["ended_at"].is_string())
            .count()
            >= 6
    });
    let ssh_sessions: Vec<_> = sessions.iter().filter(|s| s["protocol"] == "ssh").collect();
    assert!(
        ssh_sessions
            .iter()
            .all(|s| s["connection"] == "box" && s["subject"] == "ssh-user" && s["refusals"] == 0)
    );
    let events = events_where(&gw, |k| {
        k["type"] == "command" && k["command"]["text"] == "echo hello"
    });
    // The channel's output recording (`terminal` events) is checked in ssh_terminal.rs.
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["kind"]["type"].as_str().unwrap())
        .filter(|k| *k != "terminal")
        .collect();
    assert_eq!(
        kinds,
        ["session_start", "command_started", "command", "session_end"],
        "{events:#?}"
    );
    assert!(events.iter().any(|e| e["kind"]["type"] == "terminal"));
    let start = &events[0]["kind"];
    assert_eq!(start["protocol"], "ssh");
    assert_eq!(start["client_user"], "box");
    assert!(
        start["application"]
            .as_str()
            .unwrap()
            .starts_with("SSH-2.0-OpenSSH"),
        "{start}"
    );
    let command = &events
        .iter()
        .find(|e| e["kind"]["type"] == "command")
        .unwrap()["kind"];
    assert_eq!(command["command"]["step"], "exec");
    assert_eq!(command["outcome"]["status"], "ok");
    assert_eq!(command["outcome"]["tags"][0], "exit 0");

    let events = events_where(&gw, |k| {
        k["type"] == "command" && k["command"]["text"] == "exit 3"
    });
    let command = events
        .iter()
        .find(|e| e["kind"]["type"] == "command")
        .unwrap();
    assert_eq!(command["kind"]["outcome"]["status"], "error");
    assert_eq!(command["kind"]["outcome"]["tags"][0], "exit 3");
    assert_eq!(command["kind"]["outcome"]["error"]["code"], "3");

    let events = events_where(&gw, |k| {
        k["type"] == "command" && k["command"]["step"] == "shell"
    });
    let command = events
        .iter()
        .find(|e| e["kind"]["type"] == "command")
        .unwrap();
    assert_eq!(command["kind"]["outcome"]["tags"][0], "exit 0");
}

#[test]
fn refusals_are_told_and_recorded() {
    let sshd = Sshd::start();
    // Another key's line stands for a target whose host key changed.
    let other = tempfile::tempdir().unwrap();
    keygen(&other.path().join("k"));
    let wrong = std::fs::read_to_string(other.path().join("k.pub")).unwrap();
    let config = format!(
        "{}{}",
        sshd.connection("box", &sshd.host_key()),
        sshd.connection("moved", wrong.trim())
    );
    let gw = Gateway::start(&config);
    let token = gw.create_key("ssh-refused", "ops", None);
    let outsider = gw.create_key("ssh-outsider", "nobody", None);

    // A wrong token: authentication fails.
    let out = run(ssh(&gw, "not-a-token", "box", &[], &["echo never"]));
    // sshpass reports a refused password as 5; ssh itself as 255.
    assert!(
        matches!(out.status.code(), Some(5 | 255)),
        "{:?} {}",
        out.status.code(),
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("never"));

    // A valid token without access to the connection: told why.
    let out = run(ssh(&gw, &outsider, "box", &[], &["echo never"]));
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("box"), "{}", text(&out.stderr));

    // The target's host key does not match the pin: the session is refused.
    let out = run(ssh(&gw, &token, "moved", &[], &["echo never"]));
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("does not match the pinned host_key"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("never"));

    // Local port forwarding (stdio forward opens a direct-tcpip channel at once).
    let out = run(ssh(
        &gw,
        &token,
        "box",
        &["-W", &format!("127.0.0.1:{}", sshd.port)],
        &[],
    ));
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("administratively prohibited"),
        "{}",
        text(&out.stderr)
    );

    // Remote port forwarding.
    let out = run(ssh(
        &gw,
        &token,
        "box",
        &["-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9"],
        &["echo never"],
    ));
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("never"));

    // What was recorded.
    let sessions = gw.wait_sessions("the refusals", |s| {
        s.iter()
            .filter(|s| s["protocol"] == "ssh" && s["ended_at"].is_string())
            .count()
            >= 5
    });
    assert!(
        sessions
            .iter()
            .any(|s| s["protocol"] == "ssh" && s["subject"].is_null() && s["refusals"] == 1)
    );
    let refusal = |code: &str, needle: &str| {
        let events = events_where(&gw, |k| {
            k["type"] == "refusal"
                && k["code"] == code
                && (k["message"].as_str().unwrap().contains(needle)
                    || k["detail"].as_str().unwrap_or("").contains(needle))
        });
        events
            .into_iter()
            .find(|e| e["kind"]["type"] == "refusal")
            .unwrap()
    };
    let bad = refusal("bad_credentials", "");
    assert!(bad["kind"]["message"].is_string());
    refusal("access_denied", "");
    let moved = refusal("upstream_unavailable", "host key");
    assert!(
        moved["kind"]["message"]
            .as_str()
            .unwrap()
            .contains("\"moved\""),
        "{moved}"
    );
    let fwd = refusal("forbidden", "direct-tcpip");
    assert!(
        fwd["kind"]["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("direct-tcpip to 127.0.0.1:{}", sshd.port)),
        "{fwd}"
    );
    let remote = refusal("forbidden", "remote port forwarding");
    assert!(
        remote["kind"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("tcpip-forward"),
        "{remote}"
    );
}

#[test]
fn keyboard_interactive_takes_the_token() {
    let sshd = Sshd::start();
    let gw = Gateway::start(&sshd.connection("box", &sshd.host_key()));
    let token = gw.create_key("ssh-kbd", "ops", None);
    let mut cmd = Command::new("timeout");
    cmd.args([
        "60",
        "sshpass",
        "-e",
        "-P",
        "Tollgate token",
        "ssh",
        "-F",
        "/dev/null",
        "-p",
    ])
    .arg(gw.ssh_port.to_string())
    .args([
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "PreferredAuthentications=keyboard-interactive",
        "box@127.0.0.1",
        "echo kbd-ok",
    ])
    .env("SSHPASS", &token)
    .stdin(Stdio::null());
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "kbd-ok\n");
}

#[test]
fn sftp_and_scp_are_relayed_and_the_subsystem_recorded() {
    let sshd = Sshd::start();
    let gw = Gateway::start(&sshd.connection("box", &sshd.host_key()));
    let token = gw.create_key("ssh-sftp", "ops", None);
    let work = tempfile::tempdir().unwrap();
    let local = work.path().join("up.bin");
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&local, &payload).unwrap();
    let remote = work.path().join("remote.bin");
    let back = work.path().join("back.bin");
    let batch = work.path().join("batch");
    std::fs::write(
        &batch,
        format!(
            "put {} {}\nget {} {}\n",
            local.display(),
            remote.display(),
            remote.display(),
            back.display()
        ),
    )
    .unwrap();
    let out = Command::new("timeout")
        .args(["60", "sshpass", "-e", "sftp", "-F", "/dev/null", "-P"])
        .arg(gw.ssh_port.to_string())
        .args([
            "-o",
            "BatchMode=no",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "PreferredAuthentications=password",
            "-b",
        ])
        .arg(&batch)
        .arg("box@127.0.0.1")
        .env("SSHPASS", &token)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The target is this machine: the file went up through the gateway and came back.
    assert_eq!(std::fs::read(&remote).unwrap(), payload);
    assert_eq!(std::fs::read(&back).unwrap(), payload);
    // A subsystem the target does not have: told on stderr, exit status 255, recorded.
    let out = run(ssh(&gw, &token, "box", &["-s"], &["no-such-subsystem"]));
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("the target refused to start the command"),
        "{}",
        text(&out.stderr)
    );
    let events = events_where(&gw, |k| {
        k["type"] == "command" && k["command"]["text"] == "no-such-subsystem"
    });
    let command = events
        .iter()
        .find(|e| e["kind"]["type"] == "command")
        .unwrap();
    assert_eq!(command["kind"]["outcome"]["status"], "error");
    assert_eq!(command["kind"]["outcome"]["error"]["code"], "refused");

    // scp, over the sftp subsystem (the default) and the legacy protocol (an exec of `scp -t`).
    for (mode, name) in [(None, "scp-sftp.bin"), (Some("-O"), "scp-legacy.bin")] {
        let target = work.path().join(name);
        let out = Command::new("timeout")
            .args(["60", "sshpass", "-e", "scp", "-F", "/dev/null", "-P"])
            .arg(gw.ssh_port.to_string())
            .args(mode)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "PreferredAuthentications=password",
            ])
            .arg(&local)
            .arg(format!("box@127.0.0.1:{}", target.display()))
            .env("SSHPASS", &token)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{mode:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(std::fs::read(&target).unwrap(), payload, "{mode:?}");
    }
    gw.wait_sessions("the sftp session", |s| {
        s.iter()
            .any(|s| s["protocol"] == "ssh" && s["ended_at"].is_string())
    });
    let events = events_where(&gw, |k| {
        k["type"] == "command" && k["command"]["step"] == "subsystem"
    });
    let command = events
        .iter()
        .find(|e| e["kind"]["type"] == "command")
        .unwrap();
    assert_eq!(command["kind"]["command"]["text"], "sftp");
}

#[test]
fn a_revoked_key_ends_a_running_session() {
    let sshd = Sshd::start();
    let gw = Gateway::start(&sshd.connection("box", &sshd.host_key()));
    let token = gw.create_key("ssh-revoked", "ops", None);
    let mut cmd = ssh(&gw, &token, "box", &["-tt"], &[]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"echo started-$((1+1))\n").unwrap();
    let sessions = gw.wait_sessions("the running shell", |s| {
        s.iter()
            .any(|s| s["protocol"] == "ssh" && s["commands"] == 0 && s["ended_at"].is_null())
    });
    let key_id = sessions.iter().find(|s| s["protocol"] == "ssh").unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    gw.cli_ok(common::ADMIN_KEY, &["keys", "revoke", &key_id]);
    // The session ends within a few seconds, the shell still open on the client side.
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the session was not ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("revoked"),
        "{}",
        text(&out.stderr)
    );
    let sessions = gw.wait_sessions("the ended shell", |s| {
        s.iter()
            .any(|s| s["protocol"] == "ssh" && s["ended_at"].is_string())
    });
    let ended = sessions.iter().find(|s| s["protocol"] == "ssh").unwrap();
    assert!(
        ended["end_reason"]
            .as_str()
            .unwrap()
            .starts_with("refused:"),
        "{ended}"
    );
    let events = events_where(&gw, |k| k["type"] == "refusal" && k["code"] == "revoked");
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["kind"]["type"].as_str().unwrap())
        .collect();
    // The shell's command event follows the refusal (the target's side closed), then the end.
    assert_eq!(kinds.first(), Some(&"session_start"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"session_end"), "{kinds:?}");
    assert!(kinds.contains(&"refusal"), "{kinds:?}");
}

#[test]
fn known_hosts_pins_signals_come_back_and_shutdown_ends_sessions() {
    let sshd = Sshd::start();
    // A hashed known_hosts entry, as `ssh-keygen -H` writes them.
    let known = sshd.path("known_hosts");
    let key = sshd.host_key();
    let mut fields = key.split_whitespace();
    let (kind, blob) = (fields.next().unwrap(), fields.next().unwrap());
    std::fs::write(&known, format!("[127.0.0.1]:{} {kind} {blob}\n", sshd.port)).unwrap();
    let out = Command::new("ssh-keygen")
        .args(["-H", "-f"])
        .arg(&known)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::read_to_string(&known).unwrap().starts_with("|1|"));
    let config = format!(
        "[[connections]]\nname = \"box\"\nkind = \"ssh\"\nurl = \"ssh://root@127.0.0.1:{}\"\nprivate_key_file = \"{}\"\nknown_hosts = \"{}\"\ngroups = [\"ops\"]\n",
        sshd.port,
        sshd.path("user_key").display(),
        known.display()
    );
    let mut gw = Gateway::start(&config);
    let token = gw.create_key("ssh-known", "ops", None);
    let out = run(ssh(&gw, &token, "box", &[], &["echo pinned"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "pinned\n");

    // A command killed by a signal: the client learns it, the record says which.
    let out = run(ssh(&gw, &token, "box", &[], &["kill -TERM $$"]));
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    let events = events_where(&gw, |k| {
        k["type"] == "command" && k["command"]["text"] == "kill -TERM $$"
    });
    let command = events
        .iter()
        .find(|e| e["kind"]["type"] == "command")
        .unwrap();
    assert_eq!(command["kind"]["outcome"]["tags"][0], "signal TERM");

    // A shell open when the gateway stops: told, and its end recorded.
    let mut cmd = ssh(&gw, &token, "box", &["-tt"], &[]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stdin = child.stdin.take().unwrap();
    gw.wait_sessions("the open shell", |s| {
        s.iter()
            .any(|s| s["protocol"] == "ssh" && s["ended_at"].is_null())
    });
    assert!(gw.stop(), "the gateway stopped cleanly");
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("shutting down"),
        "{}",
        text(&out.stderr)
    );
    gw.restart(&config);
    let sessions = gw.sessions();
    assert!(
        sessions
            .iter()
            .any(|s| s["protocol"] == "ssh" && s["end_reason"] == "gateway shutdown"),
        "{sessions:#?}"
    );
}

#[test]
fn an_oidc_token_is_the_ssh_password_and_a_bad_one_is_refused() {
    use common::oidc::{AGENT_CLIENT, AGENT_SECRET, AUDIENCE, OidcOptions, OidcProvider};
    let idp = OidcProvider::start(OidcOptions::default());
    let sshd = Sshd::start();
    let config = format!(
        "[[oidc.issuers]]\nissuer = \"{}\"\naudiences = [\"{AUDIENCE}\"]\n\
         group_map = {{ \"ai-agents\" = [\"agents\"] }}\n\n{}",
        idp.issuer(),
        sshd.connection("box", &sshd.host_key())
            .replace("groups = [\"ops\"]", "groups = [\"agents\"]")
    );
    let gw = Gateway::start(&config);
    let token = idp.client_credentials_token(AGENT_CLIENT, AGENT_SECRET, None);

    let out = run(ssh(&gw, &token, "box", &[], &["echo via-oidc"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stderr),
        gw.stderr()
    );
    assert_eq!(text(&out.stdout), "via-oidc\n");
    let events = events_where(&gw, |k| {
        k["type"] == "command" && k["command"]["text"] == "echo via-oidc"
    });
    let identity = &events[0]["kind"]["identity"];
    assert_eq!(identity["via"], "oidc", "{identity}");
    assert_eq!(identity["kind"], "service", "{identity}");
    assert_eq!(identity["issuer"], idp.issuer(), "{identity}");

    // A token with a changed payload is refused at sign-in; nothing runs.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let (_, mut claims) = common::oidc::decode_jwt(&token);
    claims["sub"] = serde_json::json!("someone-else");
    parts[1] = common::oidc::b64url(claims.to_string().as_bytes());
    let forged = parts.join(".");
    let out = run(ssh(&gw, &forged, "box", &[], &["echo should-not-run"]));
    assert_ne!(out.status.code(), Some(0));
    assert!(!text(&out.stdout).contains("should-not-run"));
}

/// A path on the target (the test's own host) no other run uses.
fn marker(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    PathBuf::from(format!("/tmp/{name}-{}-{nanos}", std::process::id()))
}

#[test]
fn guardrails_refuse_and_hold_exec_commands() {
    let sshd = Sshd::start();
    let rules = "[[rules]]\nname = \"hold-touch\"\naction = \"approve\"\nprograms = [\"touch\"]\n\
                 operands = [\"/tmp/held-*\"]\nmode = \"hold\"\nhold_timeout = \"30s\"\n\n";
    let gw = Gateway::start(&format!(
        "{rules}{}",
        sshd.connection("box", &sshd.host_key())
    ));
    let token = gw.create_key("ssh-guarded", "ops", None);

    // A denied line is refused whole: its harmless first command does not run either.
    let trace = marker("tollgate-denied");
    let line = format!("echo x > {}; mkfs.ext4 /dev/null", trace.display());
    let out = run(ssh(&gw, &token, "box", &[], &[&line]));
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("tollgate: blocked by rule \"deny-shell-mkfs\"") && err.contains("not run"),
        "{err}"
    );
    assert!(!trace.exists(), "the refused line ran");
    assert!(out.stdout.is_empty());

    for line in ["rm -rf /", "sudo -u root bash -c 'rm -rf /'"] {
        let out = run(ssh(&gw, &token, "box", &[], &[line]));
        assert_eq!(
            out.status.code(),
            Some(126),
            "{line}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("blocked by rule \"deny-shell-rm-root\""),
            "{line}: {}",
            text(&out.stderr)
        );
    }

    // An ordinary command still runs.
    let out = run(ssh(&gw, &token, "box", &[], &["echo still-fine"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "still-fine\n");

    // A held command waits for its approval, then runs.
    let held = marker("held");
    let line = format!("touch {}", held.display());
    let mut cmd = ssh(&gw, &token, "box", &[], &[&line]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    decide_when_pending(&gw, &line, &["approve"]);
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("Waiting for approval apr_"), "{err}");
    assert!(held.exists(), "the approved command did not run");
    let _ = std::fs::remove_file(&held);

    // A denied approval: exit status 126, nothing runs.
    let refused = marker("held");
    let line_denied = format!("touch {}", refused.display());
    let mut cmd = ssh(&gw, &token, "box", &[], &[&line_denied]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    decide_when_pending(&gw, &line_denied, &["deny", "--reason", "not today"]);
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{err}");
    assert!(
        err.contains("was denied") && err.contains("not today"),
        "{err}"
    );
    assert!(!refused.exists());

    // The record: refused commands with their rule, the approved one with its approval.
    let events = events_where(&gw, |k| {
        k["type"] == "command" && k["command"]["text"] == "rm -rf /"
    });
    let command = events
        .iter()
        .find(|e| e["kind"]["type"] == "command")
        .unwrap();
    assert_eq!(command["kind"]["outcome"]["status"], "denied");
    assert_eq!(command["kind"]["outcome"]["rule"], "deny-shell-rm-root");
    let events = events_where(&gw, |k| {
        k["type"] == "command" && k["command"]["text"] == line.as_str()
    });
    let command = events
        .iter()
        .find(|e| e["kind"]["type"] == "command")
        .unwrap();
    assert_eq!(command["kind"]["outcome"]["status"], "ok", "{events:#?}");
    assert_eq!(command["kind"]["outcome"]["rule"], "hold-touch");
    assert!(
        command["kind"]["outcome"]["approval"]
            .as_str()
            .unwrap()
            .starts_with("apr_")
    );
    let events = events_where(&gw, |k| {
        k["type"] == "command" && k["command"]["text"] == line_denied.as_str()
    });
    let command = events
        .iter()
        .find(|e| e["kind"]["type"] == "command")
        .unwrap();
    assert_eq!(command["kind"]["outcome"]["status"], "approval_required");
}

#[test]
fn guardrails_check_lines_typed_in_a_shell() {
    let sshd = Sshd::start();
    let gw = Gateway::start(&sshd.connection("box", &sshd.host_key()));
    let token = gw.create_key("ssh-typist", "ops", None);
    let trace = marker("tollgate-typed");

    let mut cmd = ssh(&gw, &token, "box", &["-tt"], &[]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(
            format!(
                "touch {}; rm -rf /\necho ok-marker-$((6*7)); exit\n",
                trace.display()
            )
            .as_bytes(),
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}\n{}", text(&out.stderr));
    assert!(
        shown.contains("tollgate: blocked by rule \"deny-shell-rm-root\""),
        "{shown}"
    );
    assert!(shown.contains("ok-marker-42"), "{shown}");
    assert!(!trace.exists(), "the refused line ran");

    // A shell without a PTY reads its commands from stdin: each line is checked whole.
    let mut cmd = ssh(&gw, &token, "box", &["-T"], &[]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("touch {}; rm -rf /\necho piped-ok\n", trace.display()).as_bytes())
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(text(&out.stdout), "piped-ok\n", "{err}");
    assert!(
        err.contains("tollgate: blocked by rule \"deny-shell-rm-root\""),
        "{err}"
    );
    assert!(!trace.exists(), "the refused line ran");

    let events = events_where(&gw, |k| {
        k["type"] == "command" && k["outcome"]["rule"] == "deny-shell-rm-root"
    });
    let refused = events
        .iter()
        .find(|e| {
            e["kind"]["type"] == "command"
                && e["kind"]["command"]["step"] == "shell"
                && e["kind"]["outcome"]["status"] == "denied"
        })
        .unwrap();
    assert!(
        refused["kind"]["command"]["text"]
            .as_str()
            .unwrap()
            .ends_with("rm -rf /")
    );
}

#[test]
fn tollgate_exec_runs_ssh_commands_through_the_front() {
    let sshd = Sshd::start();
    let rules = "[[rules]]\nname = \"hold-touch\"\naction = \"approve\"\nprograms = [\"touch\"]\n\
                 operands = [\"/tmp/held-*\"]\nmode = \"hold\"\nhold_timeout = \"30s\"\n\n";
    let gw = Gateway::start(&format!(
        "{rules}{}",
        sshd.connection("box", &sshd.host_key())
    ));
    let token = gw.create_key("ssh-exec", "ops", None);
    let line = "echo hi; echo err >&2; exit 3";

    // stdout, stderr and the exit status, as `ssh box '…'` gives them.
    let out = gw.cli(&token, &["exec", "box", "-i", line]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\n");
    assert_eq!(text(&out.stderr), "err\n");

    // --json: the same as one object.
    let out = gw.cli(&token, &["exec", "box", "--json", "-i", line]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "ssh");
    assert_eq!(v["stdout"], "hi\n");
    assert_eq!(v["stderr"], "err\n");
    assert_eq!(v["exit_status"], 3);
    assert!(v["exit_signal"].is_null(), "{v}");
    assert_eq!(v["truncated"], false);

    // A signal comes back by name; the CLI exits 255 as ssh does.
    let out = gw.cli(&token, &["exec", "box", "--json", "-i", "kill -TERM $$"]);
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["exit_signal"], "TERM", "{v}");

    // Output beyond the limit is dropped and flagged, the command still completes.
    let out = gw.cli(
        &token,
        &[
            "exec",
            "box",
            "--json",
            "-i",
            "head -c 3000000 /dev/zero | tr '\\0' x; exit 4",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["truncated"], true);
    assert_eq!(v["stdout"].as_str().unwrap().len(), 1024 * 1024);

    // A denied command never runs: 126, the rule on stderr.
    let trace = marker("tollgate-exec-denied");
    let denied = format!("touch {}; rm -rf /", trace.display());
    let out = gw.cli(&token, &["exec", "box", "-i", &denied]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("blocked by rule \"deny-shell-rm-root\""),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    assert!(!trace.exists(), "the refused line ran");

    // A held command waits for its approval, then runs; the CLI tells the caller while it
    // waits, and the gateway's notice is on stderr at the end.
    let held = marker("held-exec");
    let touch = format!("touch {}", held.display());
    let mut child = Command::new(common::BIN)
        .args(["exec", "box", "-i", &touch])
        .env("TOLLGATE_URL", gw.url())
        .env("TOLLGATE_TOKEN", &token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut first).unwrap();
    assert!(
        first.starts_with("tollgate: held under rule \"hold-touch\": waiting for approval apr_"),
        "{first}"
    );
    assert!(!held.exists());
    decide_when_pending(&gw, &touch, &["approve"]);
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("Waiting for approval apr_"), "{err}");
    assert!(held.exists(), "the approved command did not run");
    let _ = std::fs::remove_file(&held);

    // A key without the connection's group is refused, and told why.
    let outsider = gw.create_key("outsider", "other", None);
    let out = gw.cli(&outsider, &["exec", "box", "-i", "echo no"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("access to connection \"box\" denied") && err.contains("outsider"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // The record: an SSH session from the API, the command as an exec step with its status
    // (recordings of the output, if any, aside).
    let events: Vec<_> = events_where(&gw, |k| {
        k["type"] == "command" && k["command"]["text"] == line
    })
    .into_iter()
    .filter(|e| e["kind"]["type"] != "terminal")
    .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["kind"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["session_start", "command_started", "command", "session_end"],
        "{events:#?}"
    );
    let start = &events[0]["kind"];
    assert_eq!(start["protocol"], "ssh");
    assert_eq!(start["channel"], "api", "{start}");
    assert_eq!(start["client_user"], "box");
    assert_eq!(start["application"], "SSH-2.0-tollgate-exec");
    assert!(
        start["client_addr"].as_str().unwrap().starts_with("api:"),
        "{start}"
    );
    assert_eq!(start["identity"]["subject"], "ssh-exec", "{start}");
    let command = &events[2]["kind"];
    assert_eq!(command["command"]["step"], "exec");
    assert_eq!(command["outcome"]["status"], "error");
    assert_eq!(command["outcome"]["tags"][0], "exit 3");

    let events = events_where(&gw, |k| {
        k["type"] == "command" && k["command"]["text"] == denied.as_str()
    });
    let command = events
        .iter()
        .find(|e| e["kind"]["type"] == "command")
        .unwrap();
    assert_eq!(command["kind"]["outcome"]["status"], "denied");
    assert_eq!(command["kind"]["outcome"]["rule"], "deny-shell-rm-root");

    let events = events_where(&gw, |k| {
        k["type"] == "refusal" && k["code"] == "access_denied"
    });
    assert_eq!(events[0]["kind"]["channel"], "api", "{events:#?}");
    let sessions = gw.sessions();
    assert!(
        sessions
            .iter()
            .filter(|s| s["protocol"] == "ssh")
            .all(|s| s["channel"] == "api"),
        "{sessions:#?}"
    );
}

/// A TCP listener on a free port: each connection's bytes are read to EOF, then answered with
/// `ok ` and those bytes reversed, and closed.
fn reversing_listener() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut got = Vec::new();
                if conn.read_to_end(&mut got).is_err() {
                    return;
                }
                got.reverse();
                let _ = conn.write_all(b"ok ");
                let _ = conn.write_all(&got);
            });
        }
    });
    port
}

#[test]
fn port_forwards_allowed_by_rule_carry_bytes_and_are_recorded() {
    let sshd = Sshd::start();
    let port = reversing_listener();
    // Allowed by the rule, but nothing listens there: the target cannot connect.
    let closed = free_port();
    let rules = format!(
        "[[rules]]\nname = \"allow-echo-tunnel\"\naction = \"allow\"\n\
         forwards = [\"127.0.0.1:{port}\", \"127.0.0.1:{closed}\"]\ngroups = [\"tunnels\"]\n\n"
    );
    let gw = Gateway::start(&format!(
        "{rules}{}",
        sshd.connection("box", &sshd.host_key())
    ));
    let token = gw.create_key("ssh-tunnel", "ops,tunnels", None);
    let outsider = gw.create_key("ssh-no-tunnel", "ops", None);

    // ssh -W: stdin goes to the destination, its answer comes back, byte for byte.
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let forward = |token: &str, dest: &str| {
        let mut cmd = ssh(&gw, token, "box", &["-W", dest], &[]);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let data = payload.clone();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        out
    };
    let out = forward(&token, &format!("127.0.0.1:{port}"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut expected = b"ok ".to_vec();
    expected.extend(payload.iter().rev());
    assert!(out.stdout == expected, "{} bytes back", out.stdout.len());

    // -L: a local port through the gateway, used by a plain TCP client while a command runs
    // (it ends when its stdin closes).
    let local = free_port();
    let mut tunnel = ssh(
        &gw,
        &token,
        "box",
        &[
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            &format!("127.0.0.1:{local}:127.0.0.1:{port}"),
        ],
        &["cat >/dev/null"],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut conn = loop {
        if let Ok(c) = std::net::TcpStream::connect(("127.0.0.1", local)) {
            break c;
        }
        assert!(Instant::now() < deadline, "the -L listener did not open");
        std::thread::sleep(Duration::from_millis(100));
    };
    conn.write_all(b"hello tunnel").unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    conn.read_to_end(&mut back).unwrap();
    drop(conn);
    assert_eq!(text(&back), "ok lennut olleh");
    drop(tunnel.stdin.take());
    let out = tunnel.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // A destination no rule allows: refused, told why.
    let out = forward(&token, &format!("127.0.0.1:{}", sshd.port));
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("administratively prohibited") && err.contains("no rule allows it"),
        "{err}"
    );
    // A caller outside the rule's groups: refused the same way.
    let out = forward(&outsider, &format!("127.0.0.1:{port}"));
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("administratively prohibited"), "{err}");
    // Allowed, but the target cannot connect: the client is told.
    let out = forward(&token, &format!("127.0.0.1:{closed}"));
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "the target could not open a connection to 127.0.0.1:{closed}"
        )),
        "{err}"
    );

    // The record: the durable start, then one forward event with the bytes each way.
    let dest = format!("127.0.0.1:{port}");
    let events = events_where(&gw, |k| {
        k["type"] == "forward" && k["bytes_out"] == payload.len() as u64
    });
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["kind"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["session_start", "command_started", "forward", "session_end"],
        "{events:#?}"
    );
    assert_eq!(events[1]["kind"]["command"]["step"], "forward");
    assert_eq!(events[1]["kind"]["command"]["text"], dest.as_str());
    assert_eq!(events[1]["kind"]["rule"], "allow-echo-tunnel");
    let fwd = &events[2]["kind"];
    assert_eq!(fwd["host"], "127.0.0.1");
    assert_eq!(fwd["port"], port);
    assert_eq!(fwd["bytes_in"], payload.len() as u64 + 3);
    assert_eq!(fwd["outcome"]["status"], "ok", "{fwd}");
    assert_eq!(fwd["outcome"]["rule"], "allow-echo-tunnel");
    assert!(fwd["outcome"]["duration_us"].as_u64().unwrap() > 0);

    let events = events_where(&gw, |k| k["type"] == "forward" && k["bytes_out"] == 12);
    let fwd = events
        .iter()
        .find(|e| e["kind"]["type"] == "forward")
        .unwrap();
    assert_eq!(fwd["kind"]["bytes_in"], 15);
    assert_eq!(fwd["kind"]["outcome"]["status"], "ok", "{fwd}");
    assert!(
        fwd["kind"]["origin"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{fwd}"
    );

    let refused = |who: &str, dest: &str| {
        let events = events_where(&gw, |k| {
            k["type"] == "refusal"
                && k["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains(&format!("direct-tcpip to {dest} ")))
        });
        assert_eq!(events[0]["kind"]["identity"]["subject"], who, "{events:#?}");
        events
            .into_iter()
            .find(|e| e["kind"]["type"] == "refusal")
            .unwrap()
    };
    let other = refused("ssh-tunnel", &format!("127.0.0.1:{}", sshd.port));
    assert_eq!(other["kind"]["code"], "forbidden");
    assert!(
        other["kind"]["detail"]
            .as_str()
            .unwrap()
            .ends_with("rule \"no-forwarding-rule\""),
        "{other}"
    );
    let outside = refused("ssh-no-tunnel", &dest);
    assert!(
        outside["kind"]["detail"]
            .as_str()
            .unwrap()
            .ends_with("rule \"no-forwarding-rule\""),
        "{outside}"
    );

    let events = events_where(&gw, |k| k["type"] == "forward" && k["port"] == closed);
    let fwd = events
        .iter()
        .find(|e| e["kind"]["type"] == "forward")
        .unwrap();
    assert_eq!(fwd["kind"]["outcome"]["status"], "error", "{fwd}");
    assert_eq!(fwd["kind"]["outcome"]["error"]["code"], "open_failed");
    assert_eq!(fwd["kind"]["bytes_out"], 0);
}

/// The real `sftp` client in batch mode through the gateway.
fn sftp_batch(
    gw: &Gateway,
    token: &str,
    dir: &std::path::Path,
    commands: &str,
) -> std::process::Output {
    let batch = dir.join("batch");
    std::fs::write(&batch, commands).unwrap();
    Command::new("timeout")
        .args(["60", "sshpass", "-e", "sftp", "-F", "/dev/null", "-P"])
        .arg(gw.ssh_port.to_string())
        .args([
            "-o",
            "BatchMode=no",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "PreferredAuthentications=password",
            "-b",
        ])
        .arg(&batch)
        .arg("box@127.0.0.1")
        .env("SSHPASS", token)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The real `scp` client through the gateway (`-O`: the legacy protocol).
fn scp(gw: &Gateway, token: &str, opts: &[&str], from: &str, to: &str) -> std::process::Output {
    Command::new("timeout")
        .args(["60", "sshpass", "-e", "scp", "-F", "/dev/null", "-P"])
        .arg(gw.ssh_port.to_string())
        .args(opts)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "PreferredAuthentications=password",
        ])
        .args([from, to])
        .env("SSHPASS", token)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Every `file_transfer` event across sessions, once there are at least `count`.
fn file_events(gw: &Gateway, count: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut all = Vec::new();
        for s in gw.sessions() {
            let detail = gw.session(s["id"].as_str().unwrap());
            for e in detail["events"].as_array().unwrap() {
                if e["kind"]["type"] == "file_transfer" {
                    all.push(e["kind"].clone());
                }
            }
        }
        if all.len() >= count {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "{} file events, expected {count}: {all:#?}",
            all.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn file_operations_are_recorded_and_refused_by_rule() {
    let sshd = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let w = work.path().display().to_string();
    let rules = format!(
        "[[rules]]\nname = \"no-secrets\"\naction = \"deny\"\nfiles = [\"{w}/secret*\"]\n\
         message = \"secrets stay on the host\"\n\n\
         [[rules]]\nname = \"read-only-drop\"\naction = \"deny\"\nfiles = [\"{w}/drop/*\"]\n\
         file_ops = [\"write\"]\n\n"
    );
    let gw = Gateway::start(&format!(
        "{rules}{}",
        sshd.connection("box", &sshd.host_key())
    ));
    let token = gw.create_key("ssh-files", "ops", None);
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(work.path().join("up.bin"), &payload).unwrap();
    std::fs::write(work.path().join("secret.txt"), b"the secret").unwrap();
    std::fs::create_dir(work.path().join("drop")).unwrap();

    // Upload, download, rename, remove, mkdir: relayed and recorded.
    let out = sftp_batch(
        &gw,
        &token,
        work.path(),
        &format!(
            "put {w}/up.bin {w}/remote.bin\nget {w}/remote.bin {w}/back.bin\n\
             rename {w}/remote.bin {w}/renamed.bin\nrm {w}/renamed.bin\nmkdir {w}/newdir\n\
             ls {w}/newdir\nrmdir {w}/newdir\nchmod 600 {w}/back.bin\n\
             ln -s {w}/back.bin {w}/symlink.bin\nln {w}/back.bin {w}/hardlink.bin\n"
        ),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(work.path().join("back.bin")).unwrap(),
        payload
    );
    assert!(!work.path().join("renamed.bin").exists());
    assert!(!work.path().join("newdir").exists());
    assert!(work.path().join("hardlink.bin").exists());

    // A denied download fails in the client and writes nothing locally.
    let out = sftp_batch(
        &gw,
        &token,
        work.path(),
        &format!("get {w}/secret.txt {w}/stolen.txt\n"),
    );
    assert_permission_denied(&out);
    assert!(!work.path().join("stolen.txt").exists());

    // A denied upload: the file is not created on the target.
    let out = sftp_batch(
        &gw,
        &token,
        work.path(),
        &format!("put {w}/up.bin {w}/drop/up.bin\n"),
    );
    assert_permission_denied(&out);
    assert!(!work.path().join("drop/up.bin").exists());

    // scp over SFTP (the default): recorded, and refused by the same rules.
    let out = scp(
        &gw,
        &token,
        &[],
        &format!("{w}/up.bin"),
        &format!("box@127.0.0.1:{w}/scp.bin"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(work.path().join("scp.bin")).unwrap(), payload);
    let out = scp(
        &gw,
        &token,
        &[],
        &format!("box@127.0.0.1:{w}/secret.txt"),
        &format!("{w}/scp-stolen.txt"),
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(!work.path().join("scp-stolen.txt").exists());

    // Legacy scp: the exec of `scp -t` / `scp -f` is refused with the rule on stderr.
    let out = scp(
        &gw,
        &token,
        &["-O"],
        &format!("{w}/up.bin"),
        &format!("box@127.0.0.1:{w}/drop/legacy.bin"),
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("read-only-drop"),
        "{}",
        text(&out.stderr)
    );
    assert!(!work.path().join("drop/legacy.bin").exists());
    let out = scp(
        &gw,
        &token,
        &["-O"],
        &format!("box@127.0.0.1:{w}/secret.txt"),
        &format!("{w}/legacy-stolen.txt"),
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("no-secrets"),
        "{}",
        text(&out.stderr)
    );

    let events = file_events(&gw, 15);
    let find = |via: &str, op: &str, path: &str| {
        events
            .iter()
            .find(|k| k["via"] == via && k["op"] == op && k["path"] == path)
            .unwrap_or_else(|| panic!("no {via} {op} {path}: {events:#?}"))
            .clone()
    };
    let ok = |k: &serde_json::Value, bytes: usize| {
        assert_eq!(k["outcome"]["status"], "ok", "{k}");
        assert_eq!(k["bytes"], bytes, "{k}");
    };
    ok(
        &find("sftp", "write", &format!("{w}/remote.bin")),
        payload.len(),
    );
    ok(
        &find("sftp", "read", &format!("{w}/remote.bin")),
        payload.len(),
    );
    ok(
        &find("sftp", "write", &format!("{w}/scp.bin")),
        payload.len(),
    );
    let rename = find("sftp", "rename", &format!("{w}/remote.bin"));
    ok(&rename, 0);
    assert_eq!(rename["to"], format!("{w}/renamed.bin"));
    ok(&find("sftp", "remove", &format!("{w}/renamed.bin")), 0);
    ok(&find("sftp", "mkdir", &format!("{w}/newdir")), 0);
    // OpenSSH's sftp lists a directory by its name with a slash.
    ok(&find("sftp", "list", &format!("{w}/newdir/")), 0);
    ok(&find("sftp", "rmdir", &format!("{w}/newdir")), 0);
    ok(&find("sftp", "setstat", &format!("{w}/back.bin")), 0);
    let links: Vec<_> = events
        .iter()
        .filter(|k| k["op"] == "link" && k["path"] == format!("{w}/back.bin"))
        .map(|k| k["to"].as_str().unwrap().to_string())
        .collect();
    assert!(links.contains(&format!("{w}/symlink.bin")), "{links:?}");
    assert!(links.contains(&format!("{w}/hardlink.bin")), "{links:?}");
    for (via, op, path, rule) in [
        ("sftp", "read", "secret.txt", "no-secrets"),
        ("sftp", "write", "drop/up.bin", "read-only-drop"),
        ("scp", "write", "drop/legacy.bin", "read-only-drop"),
        ("scp", "read", "secret.txt", "no-secrets"),
    ] {
        let k = find(via, op, &format!("{w}/{path}"));
        assert_eq!(k["outcome"]["status"], "denied", "{k}");
        assert_eq!(k["outcome"]["rule"], rule, "{k}");
        assert_eq!(k["bytes"], 0, "{k}");
        let told = k["outcome"]["error"]["message"].as_str().unwrap();
        assert!(told.starts_with("tollgate: blocked by rule"), "{k}");
    }
    let secret = find("sftp", "read", &format!("{w}/secret.txt"));
    assert!(
        secret["outcome"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("secrets stay on the host"),
        "{secret}"
    );
}

/// The real `ssh` client through the gateway signing in with a key only.
fn ssh_with_key(gw: &Gateway, key: &std::path::Path, user: &str, remote: &[&str]) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["60", "ssh", "-F", "/dev/null", "-p"])
        .arg(gw.ssh_port.to_string())
        .arg("-i")
        .arg(key)
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "PreferredAuthentications=publickey",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
        ])
        .arg(format!("{user}@127.0.0.1"))
        .args(remote)
        .stdin(Stdio::null());
    cmd
}

#[test]
fn registered_public_keys_sign_in_as_their_identity() {
    let sshd = Sshd::start();
    let gw = Gateway::start(&sshd.connection("box", &sshd.host_key()));
    let token = gw.create_key("ssh-keyholder", "ops", None);
    let keys = tempfile::tempdir().unwrap();
    let mine = keys.path().join("mine");
    let other = keys.path().join("other");
    keygen(&mine);
    keygen(&other);

    // Registered with the CLI, listed with its fingerprint and name.
    let out = gw.cli_ok(
        &token,
        &[
            "ssh-keys",
            "add",
            "--file",
            mine.with_extension("pub").to_str().unwrap(),
            "--name",
            "laptop",
        ],
    );
    let fingerprint = out
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .unwrap()
        .trim()
        .to_string();
    assert!(fingerprint.starts_with("SHA256:"), "{out}");
    let listed = gw.cli_ok(&token, &["ssh-keys", "list"]);
    assert!(
        listed.contains(&fingerprint) && listed.contains("laptop"),
        "{listed}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&gw.cli_ok(&token, &["ssh-keys", "list", "--json"])).unwrap();
    assert_eq!(json[0]["subject"], "ssh-keyholder");
    // The same key twice, and a malformed one, are refused.
    let again = gw.cli(
        &token,
        &[
            "ssh-keys",
            "add",
            mine.with_extension("pub").to_str().unwrap(),
        ],
    );
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("registered already"),
        "{}",
        text(&again.stderr)
    );
    let bad = keys.path().join("bad.pub");
    std::fs::write(&bad, "ssh-ed25519 AAAAnotakey x\n").unwrap();
    let out = gw.cli(&token, &["ssh-keys", "add", bad.to_str().unwrap()]);
    assert!(!out.status.success());

    // The key signs in as its identity and runs a command.
    let out = run(ssh_with_key(&gw, &mine, "box", &["echo signed-in-by-key"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "signed-in-by-key\n");
    let events = events_where(&gw, |k| {
        k["type"] == "command" && k["command"]["text"] == "echo signed-in-by-key"
    });
    let start = &events[0]["kind"];
    assert_eq!(start["identity"]["subject"], "ssh-keyholder", "{start}");
    assert_eq!(start["identity"]["via"], "api_key", "{start}");

    // An unregistered key does not sign in; the refusal is recorded.
    let out = run(ssh_with_key(&gw, &other, "box", &["echo never"]));
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("never"));
    events_where(&gw, |k| {
        k["type"] == "refusal"
            && k["code"] == "bad_credentials"
            && k["detail"]
                .as_str()
                .is_some_and(|d| d.contains("is not registered"))
    });

    // Removal: the key no longer signs in.
    let second = gw.create_key("ssh-second", "ops", None);
    gw.cli_ok(
        &second,
        &[
            "ssh-keys",
            "add",
            other.with_extension("pub").to_str().unwrap(),
        ],
    );
    let out = run(ssh_with_key(&gw, &other, "box", &["echo second"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let theirs: serde_json::Value =
        serde_json::from_str(&gw.cli_ok(&second, &["ssh-keys", "list", "--json"])).unwrap();
    let other_fp = theirs[0]["fingerprint"].as_str().unwrap().to_string();
    // Someone else's key is not yours to remove.
    let out = gw.cli(&token, &["ssh-keys", "remove", &other_fp]);
    assert!(!out.status.success());
    gw.cli_ok(&second, &["ssh-keys", "remove", &other_fp]);
    let out = run(ssh_with_key(&gw, &other, "box", &["echo never"]));
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));

    // Revoking the owning API key: the SSH key no longer signs in.
    let key_id = json[0]["key_id"].as_str().unwrap().to_string();
    gw.cli_ok(common::ADMIN_KEY, &["keys", "revoke", &key_id]);
    let out = run(ssh_with_key(&gw, &mine, "box", &["echo never"]));
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("never"));
    events_where(&gw, |k| {
        k["type"] == "refusal"
            && k["code"] == "revoked"
            && k["detail"]
                .as_str()
                .is_some_and(|d| d.contains(&fingerprint))
    });
}

#[test]
fn a_command_the_audit_log_cannot_record_is_not_run() {
    let sshd = Sshd::start();
    let gw = Gateway::start(&sshd.connection("box", &sshd.host_key()));
    let token = gw.create_key("ssh-strict", "ops", None);
    let before = run(ssh(&gw, &token, "box", &[], &["echo before"]));
    assert_eq!(text(&before.stdout), "before\n", "{}", text(&before.stderr));

    // No file of the gateway may grow any more, as on a full disk.
    let pid = gw.pid().to_string();
    let limit = |size: &str| {
        let out = Command::new("prlimit")
            .args(["--pid", &pid, &format!("--fsize={size}:")])
            .output()
            .unwrap();
        assert!(out.status.success(), "prlimit: {out:?}");
    };
    let trace = marker("tollgate-unrecorded");
    let line = format!("touch {}", trace.display());
    limit("0");
    let out = run(ssh(&gw, &token, "box", &[], &[&line]));
    limit("unlimited");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(
        err.contains("the audit log cannot record this command, so it was not run"),
        "{err}"
    );
    assert!(!trace.exists(), "the unrecorded command ran");

    // Once the store takes writes again: the refusal is on record, the command never as
    // started, and commands run again.
    let events = events_where(&gw, |k| {
        k["type"] == "command" && k["command"]["text"] == line.as_str()
    });
    let refused = events
        .iter()
        .find(|e| e["kind"]["type"] == "command")
        .unwrap();
    assert_eq!(refused["kind"]["outcome"]["status"], "denied");
    assert_eq!(refused["kind"]["outcome"]["error"]["code"], "audit");
    assert!(
        !events
            .iter()
            .any(|e| e["kind"]["type"] == "command_started"),
        "{events:#?}"
    );
    let after = run(ssh(&gw, &token, "box", &[], &["echo after"]));
    assert_eq!(text(&after.stdout), "after\n", "{}", text(&after.stderr));

    // SFTP: each operation is durable as started before it reaches the target; one that cannot
    // be recorded closes the channel and never runs.
    let work = tempfile::tempdir().unwrap();
    let w = work.path().display().to_string();
    std::fs::write(work.path().join("up.txt"), b"payload\n").unwrap();
    let out = sftp_batch(
        &gw,
        &token,
        work.path(),
        &format!("put {w}/up.txt {w}/first.txt\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events = events_where(&gw, |k| {
        k["type"] == "file_transfer" && k["path"] == format!("{w}/first.txt").as_str()
    });
    let started = events
        .iter()
        .position(|e| {
            e["kind"]["type"] == "command_started"
                && e["kind"]["command"]["text"] == format!("sftp write {w}/first.txt").as_str()
        })
        .expect("the upload is on record as started");
    let done = events
        .iter()
        .position(|e| e["kind"]["type"] == "file_transfer")
        .unwrap();
    assert!(started < done, "{events:#?}");
    // (The client signs in and starts sftp first, then the store stops taking writes.)
    let mut child = Command::new("timeout")
        .args(["60", "sshpass", "-e", "sftp"])
        .args(common::sshd::SSH_OPTIONS)
        .arg("-P")
        .arg(gw.ssh_port.to_string())
        .arg("box@127.0.0.1")
        .env("SSHPASS", &token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"pwd\n").unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("Remote working directory") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0);
    }
    limit("0");
    stdin
        .write_all(format!("put {w}/up.txt {w}/second.txt\n").as_bytes())
        .unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    limit("unlimited");
    assert!(!status.success());
    assert!(
        !work.path().join("second.txt").exists(),
        "an unrecorded upload ran"
    );
    events_where(&gw, |k| {
        k["type"] == "refusal"
            && k["message"]
                .as_str()
                .is_some_and(|m| m.contains("the audit log cannot record its operations"))
    });
}

#[test]
fn a_stream_that_is_not_sftp_closes_the_channel_and_is_recorded() {
    let sshd = Sshd::start();
    let gw = Gateway::start(&sshd.connection("box", &sshd.host_key()));
    let token = gw.create_key("ssh-garbage", "ops", None);
    // A packet length far past any SFTP packet, then noise.
    let mut cmd = ssh(&gw, &token, "box", &["-s"], &["sftp"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"\x7f\xff\xff\xffnot sftp at all").unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let events = events_where(&gw, |k| {
        k["type"] == "refusal" && k["code"] == "protocol_violation"
    });
    let refusal = events
        .iter()
        .find(|e| e["kind"]["type"] == "refusal")
        .unwrap();
    assert!(
        refusal["kind"]["message"]
            .as_str()
            .unwrap()
            .contains("the sftp channel was closed: what the client sent is not SFTP"),
        "{refusal}"
    );
}

#[test]
fn legacy_scp_transfers_are_recorded_file_by_file_and_never_masked() {
    let sshd = Sshd::start();
    let gw = Gateway::start(&sshd.connection("box", &sshd.host_key()));
    let token = gw.create_key("ssh-scp-legacy", "ops", None);
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let (l, r) = (local.path(), remote.path());
    // Files hold what the masking detectors find: they must still arrive byte for byte.
    let mut payload = b"contact alice@example.com, card 4111 1111 1111 1111\n".to_vec();
    payload.extend((0..200_000u32).map(|i| (i % 251) as u8));
    std::fs::write(l.join("up.bin"), &payload).unwrap();
    std::fs::create_dir(l.join("tree")).unwrap();
    std::fs::write(l.join("tree/one.txt"), b"one\n").unwrap();

    let up = scp(
        &gw,
        &token,
        &["-O"],
        &l.join("up.bin").display().to_string(),
        &format!("box@127.0.0.1:{}/", r.display()),
    );
    assert!(up.status.success(), "{}", text(&up.stderr));
    assert_eq!(std::fs::read(r.join("up.bin")).unwrap(), payload);
    let tree = scp(
        &gw,
        &token,
        &["-O", "-r"],
        &l.join("tree").display().to_string(),
        &format!("box@127.0.0.1:{}/", r.display()),
    );
    assert!(tree.status.success(), "{}", text(&tree.stderr));
    let down = scp(
        &gw,
        &token,
        &["-O"],
        &format!("box@127.0.0.1:{}/up.bin", r.display()),
        &l.join("back.bin").display().to_string(),
    );
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert_eq!(std::fs::read(l.join("back.bin")).unwrap(), payload);

    let transfers = |op: &str| -> Vec<(String, u64)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found: Vec<(String, u64)> = gw
                .sessions()
                .iter()
                .flat_map(|s| {
                    gw.session(s["id"].as_str().unwrap())["events"]
                        .as_array()
                        .unwrap()
                        .clone()
                })
                .filter(|e| {
                    e["kind"]["type"] == "file_transfer"
                        && e["kind"]["via"] == "scp"
                        && e["kind"]["op"] == op
                        && e["kind"]["outcome"]["status"] == "ok"
                })
                .map(|e| {
                    (
                        e["kind"]["path"].as_str().unwrap().to_string(),
                        e["kind"]["bytes"].as_u64().unwrap(),
                    )
                })
                .collect();
            if !found.is_empty() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let mut written = transfers("write");
    written.sort();
    let r = r.display().to_string();
    assert_eq!(
        written,
        [
            (format!("{r}/tree/one.txt"), 4),
            (format!("{r}/up.bin"), payload.len() as u64),
        ]
    );
    assert_eq!(
        transfers("read"),
        [(format!("{r}/up.bin"), payload.len() as u64)]
    );
}

/// An sftp batch the gateway refused: it failed, and the client said why.
fn assert_permission_denied(out: &std::process::Output) {
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
}
