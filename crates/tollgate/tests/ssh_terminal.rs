//! Terminal sessions through the SSH front: output masked (also when a value is split across
//! data messages), the session recorded as asciicast pieces on the chain, played back by
//! `tollgate sessions replay` and exported to a file that `asciinema cat` plays. An interactive
//! session is driven through a real PTY (resize included) with the real `ssh` client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::Gateway;
use common::sshd::{Sshd, decide_when_pending, events_where, run, ssh, ssh_pty, text};

/// A GitHub token the `github-token` detector finds (the value is made up).
const TOKEN: &str = "ghp_4Fq9ZbT2mW7xK1pR8sN3vL6yH0jD5cA2eG9u";

#[test]
fn exec_output_is_masked_even_when_a_value_is_split_across_messages() {
    let sshd = Sshd::start();
    let gw = Gateway::start(&sshd.connection("box", &sshd.host_key()));
    let key = gw.create_key("ssh-reader", "ops", None);
    let (head, tail) = TOKEN.split_at(17);
    // The target (on this machine) keeps the token in a file; the command prints it in two
    // writes with a pause between them, so the target sends two data messages with the token
    // split between them. The command line itself holds no secret.
    let file = sshd.path("token.txt");
    std::fs::write(&file, TOKEN).unwrap();
    let f = file.display();
    let script = format!(
        "printf 'token '; head -c 17 {f}; sleep 0.01; tail -c +18 {f}; printf ' end\\n'; \
         printf 'card 4111 1111 1111 1111\\n' >&2; printf 'no newline '; cat {f}"
    );
    let out = run(ssh(&gw, &key, "box", &[], &[&script]));
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stdout.contains(head) && !stdout.contains(tail), "{stdout}");
    assert!(
        stdout.starts_with("token [REDACTED:github-token] end\n"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("no newline [REDACTED:github-token]"),
        "{stdout}"
    );
    assert!(!stderr.contains("4111 1111 1111 1111"), "{stderr}");
    assert!(stderr.contains("1111"), "partially masked card: {stderr}");

    let events = events_where(&gw, |k| k["type"] == "terminal");
    let command = events
        .iter()
        .find(|e| e["kind"]["type"] == "command")
        .unwrap();
    assert_eq!(command["kind"]["outcome"]["masked"]["github-token"], 2);
    assert_eq!(command["kind"]["outcome"]["masked"]["card"], 1);
    let recorded = serde_json::to_string(&events).unwrap();
    assert!(!recorded.contains(tail), "the record holds the token");
    let piece = events
        .iter()
        .find(|e| e["kind"]["type"] == "terminal")
        .unwrap();
    assert!(
        piece["kind"]["header"]["command"]
            .as_str()
            .unwrap()
            .starts_with("printf 'token '")
    );
    // The card number on the command line is recorded masked.
    assert!(!recorded.contains("4111 1111 1111 1111"), "{recorded}");
}

#[test]
fn an_interactive_session_is_recorded_replayed_and_exported_for_asciinema() {
    let sshd = Sshd::start();
    let gw = Gateway::start(&sshd.connection("box", &sshd.host_key()));
    let key = gw.create_key("ssh-typist", "ops", None);

    // The PTY driver: starts at 80x24, runs commands, resizes to 120x40, exits with 3.
    let transcript = ssh_pty(
        &gw,
        &key,
        "box",
        &[
            ("expect", "# "),
            ("send", "export PS1='tg''$ '; stty -echoctl\r"),
            ("expect", "tg$ "),
            ("send", &format!("echo {TOKEN}\r")),
            ("expect", "[REDACTED:github-token]"),
            ("resize", "40 120"),
            ("send", "stty size\r"),
            ("expect", "40 120"),
            ("send", "exit 3\r"),
        ],
    );
    assert_eq!(transcript.status, Some(3), "{}", transcript.output);
    // The client's own echo of what it typed is shown as typed; the command's output masked.
    assert!(
        transcript.output.contains("[REDACTED:github-token]"),
        "{}",
        transcript.output
    );

    let events = events_where(&gw, |k| {
        k["type"] == "terminal" && k["header"].is_object() && k["header"]["command"].is_null()
    });
    let session = events[0]["session"].as_str().unwrap().to_string();
    let start = events
        .iter()
        .find(|e| e["kind"]["type"] == "session_start")
        .unwrap();
    assert_eq!(start["kind"]["masking"], "on");
    let recorded = serde_json::to_string(&events).unwrap();
    assert!(
        !recorded.contains(&TOKEN[4..]),
        "the record holds the token (typed, echoed or printed)"
    );
    let pieces: Vec<_> = events
        .iter()
        .filter(|e| e["kind"]["type"] == "terminal")
        .collect();
    let header = &pieces[0]["kind"]["header"];
    assert_eq!(header["width"], 80);
    assert_eq!(header["height"], 24);
    assert!(header["term"].as_str().is_some());
    let all: Vec<&serde_json::Value> = pieces
        .iter()
        .flat_map(|p| p["kind"]["events"].as_array().unwrap())
        .collect();
    assert!(
        all.iter().any(|e| e[1] == "r" && e[2] == "120x40"),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|e| e[1] == "i" && e[2].as_str().unwrap().contains("stty size")),
        "{all:?}"
    );
    let times: Vec<f64> = all.iter().map(|e| e[0].as_f64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1] + 1.0), "{times:?}");

    // The asciicast export plays with asciinema, and holds only masked output.
    let dir = tempfile::tempdir().unwrap();
    let cast = dir.path().join("session.cast");
    let out = gw.cli(
        common::ADMIN_KEY,
        &[
            "sessions",
            "replay",
            &session,
            "--format",
            "asciicast",
            "-o",
            cast.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file = std::fs::read_to_string(&cast).unwrap();
    let header: serde_json::Value = serde_json::from_str(file.lines().next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(header["width"], 80);
    assert!(!file.contains(&TOKEN[4..]), "{file}");
    // `asciinema cat` wants a terminal: `script` gives it one.
    let played = Command::new("script")
        .args(["-q", "-e", "-c"])
        .arg(format!("asciinema cat {}", cast.display()))
        .arg("/dev/null")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(played.status.success(), "{}", text(&played.stderr));
    let shown = text(&played.stdout);
    assert!(shown.contains("[REDACTED:github-token]"), "{shown}");
    assert!(shown.contains("40 120"), "{shown}");
    assert!(!shown.contains(&TOKEN[4..]), "{shown}");

    // Playback in the terminal, without pauses.
    let out = gw.cli(
        common::ADMIN_KEY,
        &["sessions", "replay", &session, "--speed", "0"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("40 120"), "{shown}");
    // The timeline still lists the session's steps.
    let out = gw.cli(
        common::ADMIN_KEY,
        &["sessions", "replay", &session, "--format", "text"],
    );
    let timeline = text(&out.stdout);
    assert!(
        timeline.contains("terminal recording of channel"),
        "{timeline}"
    );
    assert!(timeline.contains("(shell)"), "{timeline}");
    assert!(timeline.contains("exited with status 3"), "{timeline}");
    // A channel that does not exist.
    let out = gw.cli(
        common::ADMIN_KEY,
        &[
            "sessions",
            "replay",
            &session,
            "--format",
            "asciicast",
            "--channel",
            "99",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no terminal recording on channel 99"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_line_typed_in_a_shell_waits_for_its_approval() {
    let sshd = Sshd::start();
    let rule = "[[rules]]\nname = \"approve-touch\"\naction = \"approve\"\nmode = \"hold\"\n\
                programs = [\"touch\"]\nprotocols = [\"ssh\"]\nhold_timeout = \"60s\"\n\n";
    let gw = Gateway::start(&format!(
        "{}{rule}",
        sshd.connection("box", &sshd.host_key())
    ));
    let key = gw.create_key("ssh-holder", "ops", None);
    let dir = tempfile::tempdir().unwrap();
    let approved = dir.path().join("approved");
    let denied = dir.path().join("denied");
    let withdrawn = dir.path().join("withdrawn");
    let approved_line = format!("touch {} && echo touched-$((1+1))", approved.display());
    let denied_line = format!("touch {}", denied.display());

    let transcript = std::thread::scope(|scope| {
        scope.spawn(|| {
            decide_when_pending(&gw, &approved_line, &["approve"]);
            decide_when_pending(&gw, &denied_line, &["deny", "--reason", "not today"]);
        });
        ssh_pty(
            &gw,
            &key,
            "box",
            &[
                ("expect", "# "),
                ("send", "export PS1='tg''$ '\r"),
                ("expect", "tg$ "),
                ("send", &format!("{approved_line}\r")),
                ("expect", "Waiting for approval"),
                ("expect", "touched-2"),
                ("send", &format!("{denied_line}\r")),
                ("expect", "not today. The command was not run"),
                ("send", &format!("touch {}\r", withdrawn.display())),
                ("expect", "Waiting for approval"),
                ("send", "\x03"),
                ("expect", "withdrawn (Ctrl-C)"),
                ("send", "echo after-$((6*7))\r"),
                ("expect", "after-42"),
                ("send", "exit\r"),
            ],
        )
    });
    assert_eq!(transcript.status, Some(0), "{}", transcript.output);
    assert!(approved.exists(), "the approved line ran");
    assert!(!denied.exists(), "the denied line ran");
    assert!(!withdrawn.exists(), "the withdrawn line ran");

    let events = events_where(&gw, |k| {
        k["type"] == "command" && k["outcome"]["tags"][0] == "approved"
    });
    let commands: Vec<_> = events
        .iter()
        .filter(|e| e["kind"]["type"] == "command" && e["kind"]["command"]["step"] == "shell")
        .map(|e| &e["kind"])
        .collect();
    let ran = commands
        .iter()
        .find(|k| k["command"]["text"] == approved_line.as_str())
        .unwrap();
    assert_eq!(ran["outcome"]["rule"], "approve-touch");
    assert!(
        ran["outcome"]["approval"]
            .as_str()
            .unwrap()
            .starts_with("apr_")
    );
    let refused = commands
        .iter()
        .find(|k| k["command"]["text"] == denied_line.as_str())
        .unwrap();
    assert_eq!(refused["outcome"]["status"], "approval_required");
}
