//! Shell command classification by parsing: an SSH exec command or a line typed in an
//! interactive shell is read the way a POSIX shell (and bash, for the common extensions) would
//! read it, and turned into the list of simple commands that would run.
//!
//! Quoting (`r''m`, `"rm"`, `r\m`, `$'\x72m'`), separators (`;`, `&&`, `||`, `&`, newlines),
//! pipelines, subshells, brace groups, functions, command and process substitution (parsed
//! recursively), redirections, here-documents and here-strings, environment prefixes and the
//! wrappers that run another command (`sudo`, `env`, `nohup`, `timeout`, `xargs`, `sh -c`,
//! `eval`, `busybox`, `find -exec`, …) change nothing: the program that runs is found under
//! them. What the parser cannot see through — a program name that comes from an expansion
//! (`$cmd`, `$(…)`, `${x}`, a glob), unbalanced quotes, a `case` statement, history expansion — is
//! reported as [`ShellAnalysis::opaque`] so that rules can fail closed.
//!
//! Everything here is pure: no I/O. Input of any size or shape yields an answer; nesting deeper
//! than [`MAX_DEPTH`], more than [`MAX_COMMANDS`] commands and lines longer than [`MAX_LINE`]
//! are opaque.

mod commands;
mod parse;

use serde::Serialize;

/// Deepest nesting of substitutions, subshells and `sh -c` strings that is followed.
pub const MAX_DEPTH: usize = 24;
/// Most simple commands one line may yield.
pub const MAX_COMMANDS: usize = 512;
/// Longest line read (bytes); a longer one is opaque.
pub const MAX_LINE: usize = 256 * 1024;

/// What a shell line would run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShellAnalysis {
    /// Every simple command that would run, wrappers included (`sudo rm x` yields `sudo` and
    /// `rm`), in the order they appear.
    pub commands: Vec<ShellCommand>,
    /// Why the line (or part of it) cannot be read; empty when it was read completely.
    pub opaque: Vec<String>,
    /// A function that calls itself in a pipeline or in the background (`:(){ :|:& };:`).
    pub fork_bomb: bool,
}

impl ShellAnalysis {
    /// Whether some part of the line could not be read.
    pub fn is_opaque(&self) -> bool {
        !self.opaque.is_empty()
    }

    /// Line-level classes: `opaque`, `fork_bomb`.
    pub fn classes(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.is_opaque() {
            out.push("opaque");
        }
        if self.fork_bomb {
            out.push("fork_bomb");
        }
        out
    }
}

/// A redirection of a simple command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redirect {
    /// The operator as written (`>`, `>>`, `2>`, `&>`, `<`, `<<<`, `<<`, …).
    pub op: String,
    /// The target (a path, normalised like operands; a file descriptor for `>&`; the text of a
    /// here-string; the delimiter of a here-document).
    pub target: String,
    /// Whether the target file is written (`>`, `>>`, `>|`, `&>`, `<>`, `>&file`).
    pub writes: bool,
}

/// One simple command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShellCommand {
    /// The program, normalised: the last path component (`/usr/bin/rm` → `rm`).
    pub program: String,
    /// The words as the program receives them, quotes removed; expansions the parser cannot
    /// know are kept as written (`$HOME/x`).
    pub argv: Vec<String>,
    /// Options: short clusters split (`-rf` → `-r`, `-f`, and `-rf` itself), long options
    /// without their value (`--force`); none after `--`.
    pub flags: Vec<String>,
    /// The other arguments; paths normalised (`//`, `/.`, `/tmp/..` → `/`; a glob over the
    /// root such as `/*` also counts as `/`); relative ones also resolved when an earlier `cd`
    /// on the line named an absolute directory.
    pub operands: Vec<String>,
    /// Redirections that apply to this command (its own and those of enclosing groups).
    pub redirects: Vec<Redirect>,
    /// The wrappers it runs under, outermost first (`sudo`, `sh -c`, `$(…)`, …).
    pub via: Vec<String>,
    /// Its standard input comes from a network download (`curl … | sh`).
    pub stdin_from_network: bool,
    /// One of its words, redirections or here-strings carries a downloaded text
    /// (`sh -c "$(curl …)"`, `bash <(curl …)`).
    pub reads_download: bool,
    /// It is part of a pipeline of more than one command.
    pub in_pipeline: bool,
    /// It runs in the background (`&`).
    pub background: bool,
    /// Classes: `download_to_shell`, `network_redirect`.
    pub classes: Vec<&'static str>,
}

/// Classes a rule's `shell` criterion can name.
pub const SHELL_CLASSES: &[&str] = &[
    "opaque",
    "fork_bomb",
    "download_to_shell",
    "network_redirect",
];

/// Reads a shell line. Never fails: what cannot be read is listed in `opaque`.
pub fn classify_shell(line: &str) -> ShellAnalysis {
    let mut analysis = parse::analyse(line);
    for c in &mut analysis.commands {
        c.classes = commands::classes_of(c);
    }
    analysis
}

/// The line with whitespace collapsed, for `regex` rules over shell lines.
pub fn normalize_shell(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}
