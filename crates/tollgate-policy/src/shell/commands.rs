//! Facts about programs (which download, which are shells), argument splitting, path
//! normalisation and option skipping for wrappers.

use super::ShellCommand;

/// Programs whose output can be a network download.
const DOWNLOADERS: &[&str] = &[
    "curl",
    "wget",
    "wget2",
    "fetch",
    "aria2c",
    "http",
    "https",
    "xh",
    "curlie",
    "lwp-request",
    "lwp-download",
    "GET",
    "POST",
    "nc",
    "ncat",
    "netcat",
    "socat",
    "tftp",
    "ftp",
];

/// Shells: they run the text of `-c`, a script operand, or their standard input.
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "ksh93", "mksh", "ash", "posh", "yash", "fish", "csh",
    "tcsh", "rbash",
];

/// Other programs that run code from their standard input or from a file argument.
const INTERPRETERS: &[&str] = &[
    "python", "python2", "python3", "perl", "ruby", "node", "nodejs", "php", "lua", "tclsh",
    "eval", "source", ".",
];

pub(super) fn basename(word: &str) -> String {
    let trimmed = word.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((_, last)) if !last.is_empty() => last.to_string(),
        _ => trimmed.to_string(),
    }
}

pub(super) fn is_downloader(program: &str) -> bool {
    DOWNLOADERS.contains(&program)
}

pub(super) fn is_shell(program: &str) -> bool {
    SHELLS.contains(&program)
}

fn is_interpreter(program: &str) -> bool {
    INTERPRETERS.contains(&program)
        || (program.starts_with("python")
            && program[6..].chars().all(|c| c.is_ascii_digit() || c == '.'))
}

/// Whether a shell invocation's argv (after the program) has `-c`.
pub(super) fn shell_has_c(args: &[String]) -> bool {
    for a in args {
        if a == "--" || !a.starts_with(['-', '+']) || a.len() < 2 {
            return false;
        }
        if !a.starts_with("--") && a[1..].contains('c') {
            return true;
        }
    }
    false
}

/// Whether a command runs what arrives on its standard input as code (`sh`, `bash -s`,
/// `python3 -`).
pub(super) fn reads_code_from_stdin(c: &ShellCommand) -> bool {
    if !(is_shell(&c.program) || is_interpreter(&c.program)) {
        return false;
    }
    let args = c.argv.get(1..).unwrap_or(&[]);
    let has_code_flag = if is_shell(&c.program) {
        shell_has_c(args)
    } else {
        args.iter()
            .any(|a| a == "-c" || a == "-e" || a == "-r" || a == "-E")
    };
    !has_code_flag
        && (c.operands.is_empty()
            || c.operands.iter().any(|o| o == "-" || o == "/dev/stdin")
            || c.flags.iter().any(|f| f == "-s"))
}

/// Classes of one command.
pub(super) fn classes_of(c: &ShellCommand) -> Vec<&'static str> {
    let mut out = Vec::new();
    if (is_shell(&c.program) || is_interpreter(&c.program))
        && ((c.stdin_from_network && reads_code_from_stdin(c)) || c.reads_download)
    {
        out.push("download_to_shell");
    }
    if c.redirects
        .iter()
        .any(|r| r.target.starts_with("/dev/tcp/") || r.target.starts_with("/dev/udp/"))
        || c.operands
            .iter()
            .any(|o| o.starts_with("/dev/tcp/") || o.starts_with("/dev/udp/"))
    {
        out.push("network_redirect");
    }
    out
}

/// `/a//b/./c/../` → `/a/b`; `/` stays `/`. Only for absolute paths.
pub(super) fn normalize_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    if parts.is_empty() {
        return "/".into();
    }
    let mut out = String::with_capacity(path.len());
    for p in parts {
        out.push('/');
        out.push_str(p);
    }
    out
}

/// A single path component made only of glob characters and dots (`*`, `.*`, `?*`, `[!.]*`):
/// at the root it names (nearly) everything.
fn is_wide_glob(component: &str) -> bool {
    component.contains(['*', '?', '['])
        && component.chars().all(|c| {
            matches!(
                c,
                '*' | '?' | '[' | ']' | '!' | '^' | '.' | '-' | '{' | '}' | ','
            )
        })
}

/// The forms of one operand that rules see.
pub(super) fn operand_forms(arg: &str, cwd: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |s: String| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    let absolute = |p: &str| -> Vec<String> {
        let n = normalize_path(p);
        let mut v = vec![n.clone()];
        if let Some(rest) = n.strip_prefix('/')
            && !rest.contains('/')
            && is_wide_glob(rest)
        {
            v.push("/".into());
        }
        v
    };
    if arg.starts_with('/') {
        for f in absolute(arg) {
            push(f);
        }
    } else if let Some((key, value)) = arg.split_once('=')
        && value.starts_with('/')
        && !key.is_empty()
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        for f in absolute(value) {
            push(format!("{key}={f}"));
        }
    } else {
        push(arg.to_string());
        if let Some(dir) = cwd
            && !arg.starts_with('~')
            && !arg.starts_with('$')
            && !arg.is_empty()
        {
            for f in absolute(&format!("{dir}/{arg}")) {
                push(f);
            }
        }
    }
    out
}

/// Splits arguments into flags and operands (GNU style: options may follow operands; `--`
/// ends them).
pub(super) fn split_args(args: &[String], cwd: Option<&str>) -> (Vec<String>, Vec<String>) {
    let mut flags = Vec::new();
    let mut operands = Vec::new();
    let mut ended = false;
    for a in args {
        if !ended && a == "--" {
            ended = true;
        } else if !ended && a.starts_with("--") {
            let name = a.split_once('=').map_or(a.as_str(), |(n, _)| n);
            flags.push(name.to_string());
        } else if !ended && a.starts_with('-') && a.len() > 1 {
            if a.chars().count() > 2 {
                flags.push(a.clone());
            }
            for c in a.chars().skip(1) {
                let f = format!("-{c}");
                if !flags.contains(&f) {
                    flags.push(f);
                }
            }
        } else {
            for f in operand_forms(a, cwd) {
                operands.push(f);
            }
        }
    }
    (flags, operands)
}

/// How a wrapper takes its options.
pub(super) struct Opts {
    /// Short options that take a value (attached or as the next word).
    pub short_val: &'static str,
    /// Long options (without `--`) that take a value as the next word when not given `=`.
    pub long_val: &'static [&'static str],
}

/// The index of the first word after the options that start at `i`.
pub(super) fn skip_options(words: &[String], mut i: usize, opts: &Opts) -> usize {
    while let Some(w) = words.get(i) {
        if w == "--" {
            return i + 1;
        }
        if let Some(long) = w.strip_prefix("--") {
            if !long.contains('=') && opts.long_val.contains(&long) {
                i += 2;
            } else {
                i += 1;
            }
            continue;
        }
        if w.starts_with('-') && w.len() > 1 {
            let chars: Vec<char> = w.chars().skip(1).collect();
            let mut step = 1;
            for (k, c) in chars.iter().enumerate() {
                if opts.short_val.contains(*c) {
                    if k + 1 == chars.len() {
                        step = 2;
                    }
                    break;
                }
            }
            i += step;
            continue;
        }
        return i;
    }
    i
}

/// Words like `NAME=value`.
pub(super) fn is_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            let name = name.strip_suffix('+').unwrap_or(name);
            let name = name.split_once('[').map_or(name, |(n, _)| n);
            !name.is_empty()
                && name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(normalize_path("/"), "/");
        assert_eq!(normalize_path("//"), "/");
        assert_eq!(normalize_path("/."), "/");
        assert_eq!(normalize_path("/tmp/.."), "/");
        assert_eq!(normalize_path("/tmp//cache/"), "/tmp/cache");
        assert_eq!(operand_forms("/*", None), vec!["/*", "/"]);
        assert_eq!(operand_forms("/tmp/*", None), vec!["/tmp/*"]);
        assert_eq!(operand_forms("*", Some("/")), vec!["*", "/*", "/"]);
        assert_eq!(operand_forms("of=/dev//sda", None), vec!["of=/dev/sda"]);
        assert_eq!(basename("/usr/bin/rm"), "rm");
        assert_eq!(basename("rm"), "rm");
    }

    #[test]
    fn options() {
        let w = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let sudo = Opts {
            short_val: "u",
            long_val: &["user"],
        };
        assert_eq!(skip_options(&w("sudo -u root rm"), 1, &sudo), 3);
        assert_eq!(skip_options(&w("sudo -uroot rm"), 1, &sudo), 2);
        assert_eq!(skip_options(&w("sudo -E -- rm"), 1, &sudo), 3);
        assert_eq!(skip_options(&w("sudo --user root rm"), 1, &sudo), 3);
        let (f, o) = split_args(&w("-rf / --no-preserve-root -- -x"), None);
        assert_eq!(f, vec!["-rf", "-r", "-f", "--no-preserve-root"]);
        assert_eq!(o, vec!["/", "-x"]);
    }
}
