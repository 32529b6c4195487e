//! Terminal recordings of SSH sessions: played back in the terminal with their timing, or
//! exported as asciicast v2 files (what `asciinema play` and `asciinema cat` read).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::{Value, json};

/// One channel's recording, gathered from its `terminal` events in order.
#[derive(Debug, Default)]
pub struct Track {
    /// The SSH channel.
    pub channel: u64,
    /// The header of the first piece (`width`, `height`, `term`, `started`, `command`).
    pub header: Value,
    /// `[seconds, code, data]` events.
    pub events: Vec<(f64, String, String)>,
    /// Output bytes past the recording limit.
    pub unrecorded: u64,
}

/// The terminal recordings of a session's events, by channel.
pub fn tracks(events: &[Value]) -> Vec<Track> {
    let mut by_channel: BTreeMap<u64, Track> = BTreeMap::new();
    for e in events {
        let kind = &e["kind"];
        if kind["type"] != "terminal" {
            continue;
        }
        let channel = kind["channel"].as_u64().unwrap_or(0);
        let track = by_channel.entry(channel).or_insert_with(|| Track {
            channel,
            ..Track::default()
        });
        if !kind["header"].is_null() && track.header.is_null() {
            track.header = kind["header"].clone();
        }
        track.unrecorded += kind["unrecorded"].as_u64().unwrap_or(0);
        for ev in kind["events"].as_array().into_iter().flatten() {
            let t = ev[0].as_f64().unwrap_or(0.0);
            let code = ev[1].as_str().unwrap_or("o").to_string();
            let data = ev[2].as_str().unwrap_or("").to_string();
            track.events.push((t, code, data));
        }
    }
    by_channel.into_values().collect()
}

/// Picks the channel to export or play: the one asked for, or the only one.
pub fn pick(tracks: Vec<Track>, channel: Option<u64>, session: &str) -> Result<Vec<Track>> {
    match channel {
        Some(c) => match tracks.into_iter().find(|t| t.channel == c) {
            Some(t) => Ok(vec![t]),
            None => bail!("session {session} has no terminal recording on channel {c}"),
        },
        None => Ok(tracks),
    }
}

/// A line describing a track, for lists and headings.
pub fn describe(track: &Track) -> String {
    let h = &track.header;
    let what = match h["command"].as_str().filter(|c| !c.is_empty()) {
        Some(c) => format!("exec {c}"),
        None => "shell".to_string(),
    };
    let size = match (h["width"].as_u64(), h["height"].as_u64()) {
        (Some(w), Some(r)) => format!("{w}x{r}"),
        _ => "?".into(),
    };
    let mut line = format!(
        "channel {}: {what} ({size}, {} events",
        track.channel,
        track.events.len()
    );
    if track.unrecorded > 0 {
        line.push_str(&format!(
            ", {} output bytes past the recording limit not recorded",
            track.unrecorded
        ));
    }
    line.push(')');
    line
}

/// Writes one track as an asciicast v2 file.
pub fn write_asciicast(out: &mut dyn Write, track: &Track, session: &str) -> Result<()> {
    let h = &track.header;
    let mut env = serde_json::Map::new();
    if let Some(term) = h["term"].as_str() {
        env.insert("TERM".into(), json!(term));
    }
    let title = match h["command"].as_str().filter(|c| !c.is_empty()) {
        Some(c) => format!("tollgate session {session}, channel {}: {c}", track.channel),
        None => format!("tollgate session {session}, channel {}", track.channel),
    };
    let header = json!({
        "version": 2,
        "width": h["width"].as_u64().unwrap_or(80),
        "height": h["height"].as_u64().unwrap_or(24),
        "timestamp": h["started"].as_i64().unwrap_or(0) / 1_000_000,
        "env": env,
        "title": title,
    });
    writeln!(out, "{}", serde_json::to_string(&header)?)?;
    for (t, code, data) in &track.events {
        writeln!(out, "{}", serde_json::to_string(&json!([t, code, data]))?)?;
    }
    out.flush()?;
    Ok(())
}

/// Plays tracks' output in this terminal with their timing: pauses longer than `max_idle`
/// are shortened to it, and `speed` divides every pause (0 prints at once).
pub async fn play(tracks: &[Track], speed: f64, max_idle: f64) -> Result<()> {
    let mut stdout = std::io::stdout();
    for track in tracks {
        if tracks.len() > 1 {
            writeln!(stdout, "\r\n--- {} ---\r", describe(track))?;
        }
        let mut last = 0.0f64;
        for (t, code, data) in &track.events {
            if code != "o" {
                continue;
            }
            let pause = (t - last).clamp(0.0, max_idle.max(0.0));
            last = *t;
            if speed > 0.0 && pause > 0.0 {
                stdout.flush()?;
                tokio::time::sleep(Duration::from_secs_f64(pause / speed)).await;
            }
            stdout.write_all(data.as_bytes())?;
        }
        stdout.flush()?;
        if track.unrecorded > 0 {
            writeln!(
                stdout,
                "\r\n[tollgate: {} more output bytes were relayed but not recorded]\r",
                track.unrecorded
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn pieces_become_one_cast_per_channel() {
        let events = vec![
            json!({"kind": {"type": "session_start"}}),
            json!({"kind": {"type": "terminal", "channel": 0,
                "header": {"width": 100, "height": 30, "term": "xterm", "started": 1_700_000_000_000_000i64},
                "events": [[0.1, "o", "$ "], [0.5, "i", "l"]]}}),
            json!({"kind": {"type": "terminal", "channel": 1,
                "header": {"width": 80, "height": 24, "started": 1_700_000_001_000_000i64, "command": "uptime"},
                "events": [[0.0, "o", "up 3 days\r\n"]]}}),
            json!({"kind": {"type": "terminal", "channel": 0,
                "events": [[0.6, "o", "l"], [0.7, "r", "120x40"]], "unrecorded": 5}}),
        ];
        let t = tracks(&events);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].events.len(), 4);
        assert_eq!(t[0].unrecorded, 5);
        assert!(describe(&t[1]).contains("exec uptime"));
        let mut out = Vec::new();
        write_asciicast(&mut out, &t[0], "s1").unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(lines[0]["width"], 100);
        assert_eq!(lines[0]["timestamp"], 1_700_000_000);
        assert_eq!(lines[0]["env"]["TERM"], "xterm");
        assert_eq!(lines[1], json!([0.1, "o", "$ "]));
        assert_eq!(lines[4], json!([0.7, "r", "120x40"]));
        assert!(pick(t, Some(7), "s1").is_err());
    }
}
