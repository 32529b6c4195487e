//! The tokenizer and recursive-descent parser, and the unwrapping of wrapper commands.

use super::commands::{
    Opts, basename, is_assignment, is_downloader, is_shell, normalize_path, reads_code_from_stdin,
    shell_has_c, skip_options, split_args,
};
use super::{MAX_COMMANDS, MAX_DEPTH, MAX_LINE, Redirect, ShellAnalysis, ShellCommand};

/// Why parsing stopped.
#[derive(Debug)]
struct Stop(String);

type R<T> = Result<T, Stop>;

fn stop<T>(why: impl Into<String>) -> R<T> {
    Err(Stop(why.into()))
}

/// Most words one brace expansion may produce.
const MAX_BRACE_WORDS: usize = 256;
/// Longest word (in characters) brace expansion applies to.
const MAX_BRACE_WORD: usize = 4096;
/// Most `{` of one word looked at for a brace expansion.
const MAX_BRACE_TRIES: usize = 64;
/// Longest `$((…))` looked at as arithmetic.
const MAX_ARITHMETIC: usize = 4096;

#[derive(Debug, Clone)]
enum Piece {
    /// A character and whether it was quoted or escaped.
    Ch(char, bool),
    /// An expansion the parser cannot evaluate, as written.
    Exp(String),
}

#[derive(Debug, Clone, Default)]
struct Word {
    pieces: Vec<Piece>,
    /// Holds a command or process substitution whose commands download.
    net: bool,
}

impl Word {
    fn lit(text: &str) -> Word {
        Word {
            pieces: text.chars().map(|c| Piece::Ch(c, true)).collect(),
            net: false,
        }
    }

    fn text(&self) -> String {
        let mut s = String::new();
        for p in &self.pieces {
            match p {
                Piece::Ch(c, _) => s.push(*c),
                Piece::Exp(e) => s.push_str(e),
            }
        }
        s
    }

    /// No expansion.
    fn literal(&self) -> bool {
        self.pieces.iter().all(|p| matches!(p, Piece::Ch(..)))
    }

    fn any_quoted(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Ch(_, true)))
    }

    fn unquoted_is(&self, s: &str) -> bool {
        let mut chars = s.chars();
        for p in &self.pieces {
            match (p, chars.next()) {
                (Piece::Ch(c, false), Some(e)) if *c == e => {}
                _ => return false,
            }
        }
        chars.next().is_none()
    }

    /// Usable as a program name: no expansion, no glob, no brace expansion, not empty.
    fn plain(&self) -> bool {
        if !self.literal() || self.pieces.is_empty() {
            return false;
        }
        let unquoted: Vec<(usize, char)> = self
            .pieces
            .iter()
            .enumerate()
            .filter_map(|(k, p)| match p {
                Piece::Ch(c, false) => Some((k, *c)),
                _ => None,
            })
            .collect();
        let last = |ch: char| {
            unquoted
                .iter()
                .rev()
                .find(|(_, d)| *d == ch)
                .map(|(j, _)| *j)
        };
        let (bracket, brace) = (last(']'), last('}'));
        for (k, c) in &unquoted {
            match c {
                '*' | '?' => return false,
                '[' if bracket.is_some_and(|j| j > *k) => return false,
                '{' if brace.is_some_and(|j| j > *k) => return false,
                _ => {}
            }
        }
        true
    }
}

/// Brace expansion (`{a,b}` → `a`, `b`), as bash does before anything else.
fn expand_braces(word: Word, out: &mut Vec<Word>, depth: usize) -> R<()> {
    if depth > MAX_DEPTH {
        return stop("a brace expansion nested too deeply");
    }
    let p = &word.pieces;
    if p.len() > MAX_BRACE_WORD {
        // Left as written: an argument stays literal, a program name is opaque.
        out.push(word);
        return Ok(());
    }
    let unq = |k: usize, ch: char| matches!(p.get(k), Some(Piece::Ch(c, false)) if *c == ch);
    let mut tried = 0;
    for open in 0..p.len() {
        if !unq(open, '{') {
            continue;
        }
        tried += 1;
        if tried > MAX_BRACE_TRIES {
            break;
        }
        let mut depth = 0usize;
        let mut commas = Vec::new();
        let mut close = None;
        for k in open + 1..p.len() {
            if unq(k, '{') {
                depth += 1;
            } else if unq(k, '}') {
                if depth == 0 {
                    close = Some(k);
                    break;
                }
                depth -= 1;
            } else if unq(k, ',') && depth == 0 {
                commas.push(k);
            }
        }
        let Some(close) = close else {
            continue;
        };
        if commas.is_empty() {
            continue;
        }
        let mut bounds = vec![open];
        bounds.extend(commas);
        bounds.push(close);
        for pair in bounds.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let mut pieces = p[..open].to_vec();
            pieces.extend_from_slice(&p[a + 1..b]);
            pieces.extend_from_slice(&p[close + 1..]);
            expand_braces(
                Word {
                    pieces,
                    net: word.net,
                },
                out,
                depth + 1,
            )?;
            if out.len() > MAX_BRACE_WORDS {
                return stop("a brace expansion with too many words");
            }
        }
        return Ok(());
    }
    out.push(word);
    Ok(())
}

#[derive(Debug)]
enum Tok {
    Word(Word),
    Op(&'static str),
    Redir(String),
    Newline,
    Eof,
}

/// The kind of the next token, cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum K {
    Eof,
    Newline,
    Op(&'static str),
    Redir,
    /// A word; the reserved word it is, when unquoted.
    Word(Option<&'static str>),
}

const RESERVED: &[&str] = &[
    "{", "}", "!", "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "for",
    "select", "case", "esac", "in", "function", "[[", "]]",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Term {
    Eof,
    Paren,
    Brace,
}

#[derive(Debug, Default)]
struct State {
    commands: Vec<ShellCommand>,
    opaque: Vec<String>,
    fork_bomb: bool,
    cwd: Option<String>,
}

impl State {
    fn opaque(&mut self, why: String) {
        if !self.opaque.contains(&why) {
            self.opaque.push(why);
        }
    }
}

#[derive(Debug)]
struct Heredoc {
    delim: String,
    strip_tabs: bool,
    quoted: bool,
    cmd: Option<usize>,
}

struct Parser<'s> {
    s: Vec<char>,
    i: usize,
    depth: usize,
    st: &'s mut State,
    via: Vec<String>,
    /// Everything parsed here reads a download on its standard input.
    net: bool,
    peeked: Option<Tok>,
    pending: Vec<Heredoc>,
}

/// Parses a line into its commands.
pub(super) fn analyse(line: &str) -> ShellAnalysis {
    let mut st = State::default();
    if line.len() > MAX_LINE {
        st.opaque(format!("longer than {MAX_LINE} bytes"));
        return ShellAnalysis {
            opaque: st.opaque,
            ..ShellAnalysis::default()
        };
    }
    if line.trim_start().starts_with('^') {
        st.opaque("history substitution `^…^…`".into());
    }
    let mut p = Parser::new(line, 0, &mut st, Vec::new(), false);
    p.run();
    ShellAnalysis {
        commands: st.commands,
        opaque: st.opaque,
        fork_bomb: st.fork_bomb,
    }
}

impl<'s> Parser<'s> {
    fn new(text: &str, depth: usize, st: &'s mut State, via: Vec<String>, net: bool) -> Self {
        Parser {
            s: text.chars().collect(),
            i: 0,
            depth,
            st,
            via,
            net,
            peeked: None,
            pending: Vec::new(),
        }
    }

    /// Parses everything; a syntax error becomes an opaque reason.
    fn run(&mut self) {
        let result = self.parse_list(Term::Eof);
        if let Err(Stop(why)) = result {
            self.st.opaque(why);
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        for h in pending {
            if let Some(c) = h.cmd.and_then(|c| self.st.commands.get(c))
                && is_shell(&c.program)
                && !shell_has_c(c.argv.get(1..).unwrap_or(&[]))
            {
                self.st
                    .opaque("a here-document for a shell without its body".into());
            }
        }
    }

    fn sub_parse(&mut self, text: &str, via: Vec<String>, net: bool) {
        if self.depth + 1 > MAX_DEPTH {
            self.st.opaque("nested too deeply".into());
            return;
        }
        let net = net || self.net;
        let mut p = Parser::new(text, self.depth + 1, &mut *self.st, via, net);
        p.run();
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return stop("nested too deeply");
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    // ---- tokens ----

    fn at(&self, k: usize) -> Option<char> {
        self.s.get(self.i + k).copied()
    }

    fn skip_blanks(&mut self) {
        while let Some(c) = self.at(0) {
            match c {
                ' ' | '\t' | '\r' => self.i += 1,
                '\\' if self.at(1) == Some('\n') => self.i += 2,
                '#' => {
                    while self.at(0).is_some_and(|c| c != '\n') {
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn peek(&mut self) -> R<K> {
        if self.peeked.is_none() {
            let t = self.lex()?;
            self.peeked = Some(t);
        }
        Ok(match &self.peeked {
            None | Some(Tok::Eof) => K::Eof,
            Some(Tok::Newline) => K::Newline,
            Some(Tok::Op(o)) => K::Op(o),
            Some(Tok::Redir(_)) => K::Redir,
            Some(Tok::Word(w)) => K::Word(RESERVED.iter().copied().find(|r| w.unquoted_is(r))),
        })
    }

    fn take(&mut self) -> R<Tok> {
        let t = match self.peeked.take() {
            Some(t) => t,
            None => self.lex()?,
        };
        if matches!(t, Tok::Newline) && !self.pending.is_empty() {
            self.read_heredocs()?;
        }
        Ok(t)
    }

    fn take_word(&mut self) -> R<Word> {
        match self.take()? {
            Tok::Word(w) => Ok(w),
            _ => stop("expected a word"),
        }
    }

    fn skip_newlines(&mut self) -> R<()> {
        while self.peek()? == K::Newline {
            self.take()?;
        }
        Ok(())
    }

    fn lex(&mut self) -> R<Tok> {
        self.skip_blanks();
        let Some(c) = self.at(0) else {
            return Ok(Tok::Eof);
        };
        let (n1, n2) = (self.at(1), self.at(2));
        let op = |s: &'static str, me: &mut Self| {
            me.i += s.chars().count();
            Ok(Tok::Op(s))
        };
        match c {
            '\n' => {
                self.i += 1;
                Ok(Tok::Newline)
            }
            ';' => match (n1, n2) {
                (Some(';'), Some('&')) => op(";;&", self),
                (Some(';'), _) => op(";;", self),
                (Some('&'), _) => op(";&", self),
                _ => op(";", self),
            },
            '&' => match (n1, n2) {
                (Some('&'), _) => op("&&", self),
                (Some('>'), Some('>')) => {
                    self.i += 3;
                    Ok(Tok::Redir("&>>".into()))
                }
                (Some('>'), _) => {
                    self.i += 2;
                    Ok(Tok::Redir("&>".into()))
                }
                _ => op("&", self),
            },
            '|' => match n1 {
                Some('|') => op("||", self),
                Some('&') => op("|&", self),
                _ => op("|", self),
            },
            '(' => op("(", self),
            ')' => op(")", self),
            '<' | '>' if n1 != Some('(') => Ok(Tok::Redir(self.redir_op(String::new()))),
            '0'..='9' => {
                let mut k = 0;
                while self.at(k).is_some_and(|c| c.is_ascii_digit()) {
                    k += 1;
                }
                match (self.at(k), self.at(k + 1)) {
                    (Some('<' | '>'), next) if next != Some('(') => {
                        let fd: String = self.s[self.i..self.i + k].iter().collect();
                        self.i += k;
                        Ok(Tok::Redir(self.redir_op(fd)))
                    }
                    _ => Ok(Tok::Word(self.read_word()?)),
                }
            }
            _ => Ok(Tok::Word(self.read_word()?)),
        }
    }

    fn redir_op(&mut self, mut fd: String) -> String {
        let (a, b, c) = (self.at(0), self.at(1), self.at(2));
        let op = match (a, b, c) {
            (Some('<'), Some('<'), Some('<')) => "<<<",
            (Some('<'), Some('<'), Some('-')) => "<<-",
            (Some('<'), Some('<'), _) => "<<",
            (Some('<'), Some('>'), _) => "<>",
            (Some('<'), Some('&'), _) => "<&",
            (Some('>'), Some('>'), _) => ">>",
            (Some('>'), Some('&'), _) => ">&",
            (Some('>'), Some('|'), _) => ">|",
            (Some('>'), _, _) => ">",
            _ => "<",
        };
        self.i += op.chars().count();
        fd.push_str(op);
        fd
    }

    fn read_word(&mut self) -> R<Word> {
        let mut w = Word::default();
        while let Some(c) = self.at(0) {
            match c {
                ' ' | '\t' | '\r' | '\n' | ';' | '&' | '|' | '(' | ')' => break,
                '<' | '>' => {
                    if self.at(1) == Some('(') {
                        self.process_substitution(&mut w, c)?;
                    } else {
                        break;
                    }
                }
                '\\' => match self.at(1) {
                    Some('\n') => self.i += 2,
                    Some(n) => {
                        w.pieces.push(Piece::Ch(n, true));
                        self.i += 2;
                    }
                    None => {
                        w.pieces.push(Piece::Ch('\\', true));
                        self.i += 1;
                    }
                },
                '\'' => {
                    self.i += 1;
                    loop {
                        match self.at(0) {
                            None => return stop("an unbalanced single quote"),
                            Some('\'') => {
                                self.i += 1;
                                break;
                            }
                            Some(q) => {
                                w.pieces.push(Piece::Ch(q, true));
                                self.i += 1;
                            }
                        }
                    }
                    if w.pieces.is_empty() {
                        // `''` is an empty word, still a word.
                        w.pieces.push(Piece::Ch('\0', true));
                        w.pieces.pop();
                    }
                }
                '"' => self.read_double(&mut w)?,
                '$' => self.read_dollar(&mut w, false)?,
                '`' => self.read_backtick(&mut w)?,
                '!' => {
                    if self.at(1).is_some_and(|n| {
                        !matches!(n, ' ' | '\t' | '\n' | '=' | '(' | ';' | '&' | '|' | ')')
                    }) {
                        self.st.opaque("history expansion `!…`".into());
                    }
                    w.pieces.push(Piece::Ch('!', false));
                    self.i += 1;
                }
                _ => {
                    w.pieces.push(Piece::Ch(c, false));
                    self.i += 1;
                }
            }
        }
        Ok(w)
    }

    fn read_double(&mut self, w: &mut Word) -> R<()> {
        self.i += 1;
        loop {
            match self.at(0) {
                None => return stop("an unbalanced double quote"),
                Some('"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some('\\') => match self.at(1) {
                    Some('\n') => self.i += 2,
                    Some(n @ ('$' | '`' | '"' | '\\')) => {
                        w.pieces.push(Piece::Ch(n, true));
                        self.i += 2;
                    }
                    _ => {
                        w.pieces.push(Piece::Ch('\\', true));
                        self.i += 1;
                    }
                },
                Some('$') => self.read_dollar(w, true)?,
                Some('`') => self.read_backtick(w)?,
                Some(c) => {
                    w.pieces.push(Piece::Ch(c, true));
                    self.i += 1;
                }
            }
        }
    }

    fn raw_from(&self, start: usize) -> String {
        let end = self.i.min(self.s.len());
        let raw: String = self.s[start.min(end)..end].iter().collect();
        if raw.chars().count() > 60 {
            let short: String = raw.chars().take(57).collect();
            format!("{short}…")
        } else {
            raw
        }
    }

    fn read_dollar(&mut self, w: &mut Word, quoted: bool) -> R<()> {
        let start = self.i;
        match self.at(1) {
            Some('\'') if !quoted => {
                self.i += 2;
                self.read_ansi_c(w)
            }
            Some('"') if !quoted => {
                self.i += 1;
                self.read_double(w)
            }
            Some('(') if self.at(2) == Some('(') && self.arithmetic_end().is_some() => {
                let end = self.arithmetic_end().unwrap_or(self.s.len());
                let inner: String = self.s[self.i + 3..end.saturating_sub(2).max(self.i + 3)]
                    .iter()
                    .collect();
                self.i = end;
                if inner.contains("$(") || inner.contains('`') {
                    self.st
                        .opaque("a command substitution inside arithmetic".into());
                }
                w.pieces.push(Piece::Exp(self.raw_from(start)));
                Ok(())
            }
            Some('(') => {
                self.i += 2;
                let before = self.st.commands.len();
                self.nested("$(…)")?;
                w.net |= self.downloads_since(before);
                w.pieces.push(Piece::Exp(self.raw_from(start)));
                Ok(())
            }
            Some('{') => {
                self.i += 2;
                let mut depth = 1usize;
                let inner_start = self.i;
                while depth > 0 {
                    match self.at(0) {
                        None => return stop("an unbalanced ${"),
                        Some('\\') => self.i += 2,
                        Some('{') => {
                            depth += 1;
                            self.i += 1;
                        }
                        Some('}') => {
                            depth -= 1;
                            self.i += 1;
                        }
                        Some(_) => self.i += 1,
                    }
                }
                let end = self.i.min(self.s.len());
                let inner: String = self.s[inner_start..end].iter().collect();
                if inner.contains("$(") || inner.contains('`') {
                    self.st.opaque("a command substitution inside ${…}".into());
                }
                w.pieces.push(Piece::Exp(self.raw_from(start)));
                Ok(())
            }
            Some('[') => {
                self.i += 2;
                while self.at(0).is_some_and(|c| c != ']') {
                    self.i += 1;
                }
                self.i += 1;
                w.pieces.push(Piece::Exp(self.raw_from(start)));
                Ok(())
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                self.i += 1;
                while self
                    .at(0)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    self.i += 1;
                }
                w.pieces.push(Piece::Exp(self.raw_from(start)));
                Ok(())
            }
            Some(c) if c.is_ascii_digit() || "@*#?-$!".contains(c) => {
                self.i += 2;
                w.pieces.push(Piece::Exp(self.raw_from(start)));
                Ok(())
            }
            _ => {
                w.pieces.push(Piece::Ch('$', quoted));
                self.i += 1;
                Ok(())
            }
        }
    }

    /// Where `$((…))` ends (index after the closing `))`), if it is arithmetic.
    fn arithmetic_end(&self) -> Option<usize> {
        let mut depth = 2usize;
        let mut k = self.i + 3;
        while let Some(&c) = self.s.get(k) {
            if k - self.i > MAX_ARITHMETIC {
                return None;
            }
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 1 {
                        return (self.s.get(k + 1) == Some(&')')).then_some(k + 2);
                    }
                }
                _ => {}
            }
            k += 1;
        }
        None
    }

    fn read_ansi_c(&mut self, w: &mut Word) -> R<()> {
        loop {
            let Some(c) = self.at(0) else {
                return stop("an unbalanced $'");
            };
            self.i += 1;
            match c {
                '\'' => return Ok(()),
                '\\' => {
                    let Some(e) = self.at(0) else {
                        return stop("an unbalanced $'");
                    };
                    self.i += 1;
                    let simple = match e {
                        'n' => Some('\n'),
                        't' => Some('\t'),
                        'r' => Some('\r'),
                        'a' => Some('\x07'),
                        'b' => Some('\x08'),
                        'e' | 'E' => Some('\x1b'),
                        'f' => Some('\x0c'),
                        'v' => Some('\x0b'),
                        '\\' | '\'' | '"' | '?' => Some(e),
                        _ => None,
                    };
                    if let Some(ch) = simple {
                        w.pieces.push(Piece::Ch(ch, true));
                        continue;
                    }
                    let (radix, max, skip) = match e {
                        'x' => (16, 2, 0),
                        'u' => (16, 4, 0),
                        'U' => (16, 8, 0),
                        '0'..='7' => (8, 3, 1),
                        'c' => {
                            let ctl = self.at(0).map(|c| ((c as u32) & 0x1f) as u8 as char);
                            self.i += 1;
                            if let Some(ch) = ctl {
                                w.pieces.push(Piece::Ch(ch, true));
                            }
                            continue;
                        }
                        other => {
                            w.pieces.push(Piece::Ch('\\', true));
                            w.pieces.push(Piece::Ch(other, true));
                            continue;
                        }
                    };
                    if skip == 1 {
                        self.i -= 1;
                    }
                    let mut v: u32 = 0;
                    let mut n = 0;
                    while n < max
                        && let Some(d) = self.at(0).and_then(|c| c.to_digit(radix))
                    {
                        v = v.saturating_mul(radix).saturating_add(d);
                        self.i += 1;
                        n += 1;
                    }
                    if n == 0 {
                        w.pieces.push(Piece::Ch('\\', true));
                        w.pieces.push(Piece::Ch(e, true));
                    } else if let Some(ch) = char::from_u32(v) {
                        w.pieces.push(Piece::Ch(ch, true));
                    }
                }
                other => w.pieces.push(Piece::Ch(other, true)),
            }
        }
    }

    fn read_backtick(&mut self, w: &mut Word) -> R<()> {
        let start = self.i;
        self.i += 1;
        let mut inner = String::new();
        loop {
            match self.at(0) {
                None => return stop("an unbalanced backquote"),
                Some('`') => {
                    self.i += 1;
                    break;
                }
                Some('\\') => {
                    match self.at(1) {
                        Some(n @ ('`' | '\\' | '$')) => inner.push(n),
                        Some(n) => {
                            inner.push('\\');
                            inner.push(n);
                        }
                        None => inner.push('\\'),
                    }
                    self.i += 2;
                }
                Some(c) => {
                    inner.push(c);
                    self.i += 1;
                }
            }
        }
        let before = self.st.commands.len();
        let mut via = self.via.clone();
        via.push("`…`".into());
        self.sub_parse(&inner, via, false);
        w.net |= self.downloads_since(before);
        w.pieces.push(Piece::Exp(self.raw_from(start)));
        Ok(())
    }

    fn process_substitution(&mut self, w: &mut Word, c: char) -> R<()> {
        let start = self.i;
        self.i += 2;
        let before = self.st.commands.len();
        self.nested(if c == '<' { "<(…)" } else { ">(…)" })?;
        w.net |= self.downloads_since(before);
        w.pieces.push(Piece::Exp(self.raw_from(start)));
        Ok(())
    }

    /// Parses a list up to `)` in this text, under `label`.
    fn nested(&mut self, label: &str) -> R<()> {
        if self.peeked.is_some() {
            return stop("a substitution after a token");
        }
        self.enter()?;
        self.via.push(label.into());
        let r = self.parse_list(Term::Paren);
        self.via.pop();
        r?;
        match self.take()? {
            Tok::Op(")") => {}
            _ => return stop("an unbalanced $( or <("),
        }
        self.leave();
        Ok(())
    }

    fn downloads_since(&self, before: usize) -> bool {
        self.st
            .commands
            .get(before..)
            .is_some_and(|cs| cs.iter().any(|c| is_downloader(&c.program)))
    }

    fn read_heredocs(&mut self) -> R<()> {
        let pending = std::mem::take(&mut self.pending);
        for h in pending {
            let mut body = String::new();
            let mut complete = false;
            while self.i < self.s.len() {
                let start = self.i;
                while self.at(0).is_some_and(|c| c != '\n') {
                    self.i += 1;
                }
                let line: String = self.s[start..self.i].iter().collect();
                if self.at(0) == Some('\n') {
                    self.i += 1;
                }
                let cmp = if h.strip_tabs {
                    line.trim_start_matches('\t')
                } else {
                    &line[..]
                };
                if cmp == h.delim {
                    complete = true;
                    break;
                }
                body.push_str(&line);
                body.push('\n');
            }
            let Some(cmd) = h.cmd.and_then(|c| self.st.commands.get(c)).cloned() else {
                continue;
            };
            if is_shell(&cmd.program) && !shell_has_c(cmd.argv.get(1..).unwrap_or(&[])) {
                if !complete {
                    self.st
                        .opaque("a here-document for a shell without its end".into());
                }
                let mut via = cmd.via.clone();
                via.push(format!("{} <<", cmd.program));
                self.sub_parse(&body, via, false);
            } else if !h.quoted && (body.contains("$(") || body.contains('`')) {
                self.st
                    .opaque("a command substitution in a here-document".into());
            }
        }
        Ok(())
    }

    // ---- grammar ----

    fn parse_list(&mut self, term: Term) -> R<()> {
        loop {
            while let K::Newline | K::Op(";") = self.peek()? {
                self.take()?;
            }
            match self.peek()? {
                K::Eof if term == Term::Eof => return Ok(()),
                K::Eof => return stop("an unbalanced ( or {"),
                K::Op(")") if term == Term::Paren => return Ok(()),
                K::Word(Some("}")) if term == Term::Brace => return Ok(()),
                _ => {}
            }
            let start = self.st.commands.len();
            self.parse_and_or()?;
            match self.peek()? {
                K::Op("&") => {
                    self.take()?;
                    for c in self.st.commands.iter_mut().skip(start) {
                        c.background = true;
                    }
                }
                K::Op(";") | K::Newline => {
                    self.take()?;
                }
                K::Eof | K::Op(")") | K::Word(Some("}")) => {}
                K::Op(op) => return stop(format!("an unexpected `{op}`")),
                _ => return stop("an unexpected word after a command"),
            }
        }
    }

    fn parse_and_or(&mut self) -> R<()> {
        self.parse_pipeline()?;
        while matches!(self.peek()?, K::Op("&&" | "||")) {
            self.take()?;
            self.skip_newlines()?;
            self.parse_pipeline()?;
        }
        Ok(())
    }

    fn parse_pipeline(&mut self) -> R<()> {
        let first = self.st.commands.len();
        let mut fed = false;
        let mut stages = 0;
        loop {
            while self.peek()? == K::Word(Some("!")) {
                self.take()?;
            }
            let start = self.st.commands.len();
            self.parse_command()?;
            stages += 1;
            if fed {
                for c in self.st.commands.iter_mut().skip(start) {
                    c.stdin_from_network = true;
                }
            }
            if stages > 1
                && self
                    .st
                    .commands
                    .get(start..)
                    .is_some_and(|cs| cs.iter().any(reads_code_from_stdin))
            {
                // `echo cm0gLXJmIC8= | base64 -d | sh`: the script is made on the line.
                self.st
                    .opaque("a shell or interpreter reading its script from a pipe".into());
            }
            fed |= self.downloads_since(start);
            if matches!(self.peek()?, K::Op("|" | "|&")) {
                self.take()?;
                self.skip_newlines()?;
            } else {
                break;
            }
        }
        if stages > 1 {
            for c in self.st.commands.iter_mut().skip(first) {
                c.in_pipeline = true;
            }
        }
        Ok(())
    }

    fn parse_command(&mut self) -> R<()> {
        // Keywords that only introduce or continue a compound command: what follows them is a
        // command of its own.
        while let K::Word(Some("if" | "then" | "else" | "elif" | "do" | "while" | "until" | "!")) =
            self.peek()?
        {
            self.take()?;
            if !matches!(self.peek()?, K::Word(_) | K::Op("(") | K::Redir) {
                return Ok(());
            }
        }
        match self.peek()? {
            K::Op("(") => {
                self.take()?;
                let start = self.st.commands.len();
                self.enter()?;
                self.parse_list(Term::Paren)?;
                match self.take()? {
                    Tok::Op(")") => {}
                    _ => return stop("an unbalanced ("),
                }
                self.leave();
                self.group_redirects(start)
            }
            K::Word(Some("{")) => {
                self.take()?;
                let start = self.st.commands.len();
                self.enter()?;
                self.parse_list(Term::Brace)?;
                if self.peek()? != K::Word(Some("}")) {
                    return stop("an unbalanced {");
                }
                self.take()?;
                self.leave();
                self.group_redirects(start)
            }
            K::Word(Some("function")) => {
                self.take()?;
                let name = self.take_word()?.text();
                if self.peek()? == K::Op("(") {
                    self.take()?;
                    if self.peek()? != K::Op(")") {
                        return stop("a syntax error after `function`");
                    }
                    self.take()?;
                }
                self.function_body(&name)
            }
            K::Word(Some("case")) => stop("a `case` statement (not analysed)"),
            K::Word(Some("for" | "select")) => {
                self.take()?;
                if self.peek()? == K::Op("(") {
                    return stop("an arithmetic `for` loop (not analysed)");
                }
                while let K::Word(_) = self.peek()? {
                    self.take()?;
                }
                Ok(())
            }
            K::Word(Some("fi" | "done" | "esac" | "}")) => {
                self.take()?;
                let start = self.st.commands.len();
                self.group_redirects(start)
            }
            K::Word(Some("[[")) => {
                self.take()?;
                loop {
                    match self.peek()? {
                        K::Word(Some("]]")) => {
                            self.take()?;
                            return Ok(());
                        }
                        K::Eof | K::Newline => return stop("an unterminated [["),
                        _ => {
                            self.take()?;
                        }
                    }
                }
            }
            K::Word(_) | K::Redir => self.parse_simple(),
            K::Op(op) => stop(format!("an unexpected `{op}`")),
            K::Eof | K::Newline => stop("a missing command"),
        }
    }

    /// Redirections after a group apply to every command in it.
    fn group_redirects(&mut self, start: usize) -> R<()> {
        let mut redirects = Vec::new();
        while self.peek()? == K::Redir {
            let Tok::Redir(op) = self.take()? else {
                return stop("expected a redirection");
            };
            let target = self.take_word()?;
            redirects.push(make_redirect(&op, &target));
        }
        if redirects.is_empty() {
            return Ok(());
        }
        if start == self.st.commands.len() {
            self.record("", &[], &redirects, &self.via.clone(), false)?;
        } else {
            for c in self.st.commands.iter_mut().skip(start) {
                c.redirects.extend(redirects.iter().cloned());
            }
        }
        Ok(())
    }

    fn function_body(&mut self, name: &str) -> R<()> {
        self.skip_newlines()?;
        let start = self.st.commands.len();
        self.enter()?;
        self.parse_command()?;
        self.leave();
        if self
            .st
            .commands
            .iter()
            .skip(start)
            .any(|c| c.program == name && (c.in_pipeline || c.background))
        {
            self.st.fork_bomb = true;
        }
        Ok(())
    }

    fn parse_simple(&mut self) -> R<()> {
        let mut assigns: Vec<Word> = Vec::new();
        let mut words: Vec<Word> = Vec::new();
        let mut redirs: Vec<(String, Word)> = Vec::new();
        let mark = self.pending.len();
        loop {
            match self.peek()? {
                K::Word(_) => {
                    let w = self.take_word()?;
                    if words.is_empty()
                        && matches!(w.pieces.first(), Some(Piece::Ch(_, false)))
                        && is_assignment(&w.text())
                    {
                        if w.text().ends_with('=') && self.peek()? == K::Op("(") {
                            self.take()?;
                            loop {
                                match self.peek()? {
                                    K::Word(_) | K::Newline => {
                                        self.take()?;
                                    }
                                    K::Op(")") => {
                                        self.take()?;
                                        break;
                                    }
                                    _ => return stop("an unbalanced array assignment"),
                                }
                            }
                        }
                        assigns.push(w);
                        continue;
                    }
                    words.push(w);
                    if words.len() == 1 && assigns.is_empty() && self.peek()? == K::Op("(") {
                        self.take()?;
                        if self.peek()? != K::Op(")") {
                            return stop("a syntax error near `(`");
                        }
                        self.take()?;
                        let name = words[0].text();
                        return self.function_body(&name);
                    }
                }
                K::Redir => {
                    let Tok::Redir(op) = self.take()? else {
                        return stop("expected a redirection");
                    };
                    let target = match self.take()? {
                        Tok::Word(w) => w,
                        _ => return stop("a redirection without a target"),
                    };
                    if op.ends_with("<<") || op.ends_with("<<-") {
                        self.pending.push(Heredoc {
                            delim: target.text(),
                            strip_tabs: op.ends_with('-'),
                            quoted: target.any_quoted(),
                            cmd: None,
                        });
                    }
                    redirs.push((op, target));
                }
                _ => break,
            }
        }
        self.finish_simple(assigns, words, redirs, mark)
    }

    fn finish_simple(
        &mut self,
        assigns: Vec<Word>,
        words: Vec<Word>,
        redirs: Vec<(String, Word)>,
        mark: usize,
    ) -> R<()> {
        let any_net = words
            .iter()
            .chain(assigns.iter())
            .chain(redirs.iter().map(|(_, w)| w))
            .any(|w| w.net);
        let redirects: Vec<Redirect> = redirs.iter().map(|(op, w)| make_redirect(op, w)).collect();
        let mut expanded = Vec::new();
        for w in words {
            expand_braces(w, &mut expanded, 0)?;
        }
        let via = self.via.clone();
        let last = if expanded.is_empty() {
            if redirects.is_empty() {
                None
            } else {
                Some(self.record("", &[], &redirects, &via, any_net)?)
            }
        } else {
            let texts: Vec<String> = expanded.iter().map(Word::text).collect();
            self.run_words(&expanded, &texts, 0, &redirects, any_net, via)?
        };
        for h in self.pending.iter_mut().skip(mark) {
            h.cmd = last;
        }
        // A here-string given to a shell is a script.
        if let Some(c) = last.and_then(|c| self.st.commands.get(c))
            && is_shell(&c.program)
            && !shell_has_c(c.argv.get(1..).unwrap_or(&[]))
        {
            let mut via = c.via.clone();
            via.push(format!("{} <<<", c.program));
            for (op, w) in &redirs {
                if op.ends_with("<<<") {
                    if w.literal() {
                        self.sub_parse(&w.text(), via.clone(), false);
                    } else {
                        self.st
                            .opaque("a here-string with a computed script".into());
                    }
                }
            }
        }
        Ok(())
    }

    fn record(
        &mut self,
        program: &str,
        argv: &[String],
        redirects: &[Redirect],
        via: &[String],
        reads_download: bool,
    ) -> R<usize> {
        if self.st.commands.len() >= MAX_COMMANDS {
            return stop(format!("more than {MAX_COMMANDS} commands"));
        }
        let (flags, operands) = split_args(argv.get(1..).unwrap_or(&[]), self.st.cwd.as_deref());
        self.st.commands.push(ShellCommand {
            program: program.to_string(),
            argv: argv.to_vec(),
            flags,
            operands,
            redirects: redirects.to_vec(),
            via: via.to_vec(),
            stdin_from_network: self.net,
            reads_download,
            ..ShellCommand::default()
        });
        Ok(self.st.commands.len() - 1)
    }

    /// Records the command at `words[i]` and, through wrappers, the commands it runs. Returns
    /// the index of the innermost one recorded.
    fn run_words(
        &mut self,
        words: &[Word],
        texts: &[String],
        mut i: usize,
        redirects: &[Redirect],
        any_net: bool,
        mut via: Vec<String>,
    ) -> R<Option<usize>> {
        let mut last = None;
        loop {
            let (Some(w), Some(text)) = (words.get(i), texts.get(i)) else {
                return Ok(last);
            };
            if via.len() >= MAX_DEPTH {
                self.st
                    .opaque("too many wrappers around one command".into());
                return Ok(last);
            }
            if !w.plain() {
                let shown: String = text.chars().take(60).collect();
                self.st.opaque(format!(
                    "the program name `{shown}` comes from an expansion or a pattern"
                ));
                return Ok(last);
            }
            let name = basename(text);
            if name.is_empty() {
                self.st.opaque("an empty program name".into());
                return Ok(last);
            }
            let idx = self.record(&name, &texts[i..], redirects, &via, any_net)?;
            last = Some(idx);
            let next = self.unwrap_one(&name, words, texts, i, &via)?;
            match next {
                Some(j) if j > i => {
                    via.push(name);
                    i = j;
                }
                _ => return Ok(last),
            }
        }
    }

    /// For a wrapper at `texts[i]`, the index of the command it runs (or parses the string it
    /// runs and returns `None`).
    fn unwrap_one(
        &mut self,
        name: &str,
        words: &[Word],
        texts: &[String],
        i: usize,
        via: &[String],
    ) -> R<Option<usize>> {
        let skip_assignments = |mut j: usize| {
            while texts.get(j).is_some_and(|t| is_assignment(t)) {
                j += 1;
            }
            j
        };
        let opts_before = |j: usize| -> Vec<&String> {
            texts
                .get(i + 1..j.min(texts.len()))
                .unwrap_or(&[])
                .iter()
                .filter(|t| t.starts_with('-') && !t.starts_with("--"))
                .collect()
        };
        let via_plus = |extra: &str| {
            let mut v = via.to_vec();
            v.push(extra.to_string());
            v
        };
        let string_at = |me: &mut Self, k: usize, label: &str| {
            if let (Some(w), Some(t)) = (words.get(k), texts.get(k)) {
                if w.literal() {
                    me.sub_parse(t, via_plus(label), false);
                } else {
                    me.st
                        .opaque(format!("`{label}` with a computed command string"));
                }
            }
        };
        Ok(match name {
            "sudo" | "doas" => {
                let opts = if name == "sudo" {
                    Opts {
                        short_val: "CDghpRrtTUu",
                        long_val: &[
                            "close-from",
                            "chdir",
                            "group",
                            "host",
                            "prompt",
                            "chroot",
                            "role",
                            "type",
                            "command-timeout",
                            "other-user",
                            "user",
                        ],
                    }
                } else {
                    Opts {
                        short_val: "uC",
                        long_val: &[],
                    }
                };
                let j = skip_options(texts, i + 1, &opts);
                let lists = opts_before(j)
                    .iter()
                    .any(|o| o.contains('e') || o.contains('l'))
                    || texts
                        .get(i + 1..j.min(texts.len()))
                        .is_some_and(|ts| ts.iter().any(|t| t == "--edit" || t == "--list"));
                if lists {
                    None
                } else {
                    Some(skip_assignments(j))
                }
            }
            "env" => {
                let mut j = i + 1;
                while let Some(t) = texts.get(j) {
                    if t == "--" {
                        j += 1;
                        break;
                    }
                    if let Some(v) = t.strip_prefix("--split-string=") {
                        let rest = texts.get(j + 1..).unwrap_or(&[]).join(" ");
                        let line = format!("{v} {rest}");
                        if words.get(j).is_some_and(Word::literal) {
                            self.sub_parse(&line, via_plus("env -S"), false);
                        } else {
                            self.st.opaque("`env -S` with a computed string".into());
                        }
                        return Ok(None);
                    }
                    if t.starts_with("--") {
                        j += if t == "--unset" || t == "--chdir" || t == "--split-string" {
                            if t == "--split-string" {
                                let rest = texts.get(j + 1..).unwrap_or(&[]).join(" ");
                                self.sub_parse(&rest, via_plus("env -S"), false);
                                return Ok(None);
                            }
                            2
                        } else {
                            1
                        };
                        continue;
                    }
                    if t.starts_with('-') && t.len() > 1 {
                        let cluster: Vec<char> = t.chars().skip(1).collect();
                        let mut step = 1;
                        for (k, c) in cluster.iter().enumerate() {
                            if *c == 'S' {
                                let attached: String = cluster[k + 1..].iter().collect();
                                let (script, from) = if attached.is_empty() {
                                    (texts.get(j + 1).cloned().unwrap_or_default(), j + 2)
                                } else {
                                    (attached, j + 1)
                                };
                                let rest = texts.get(from..).unwrap_or(&[]).join(" ");
                                self.sub_parse(
                                    &format!("{script} {rest}"),
                                    via_plus("env -S"),
                                    false,
                                );
                                return Ok(None);
                            }
                            if (*c == 'u' || *c == 'C') && k + 1 == cluster.len() {
                                step = 2;
                                break;
                            }
                            if *c == 'u' || *c == 'C' {
                                break;
                            }
                        }
                        j += step;
                        continue;
                    }
                    if t == "-" || is_assignment(t) {
                        j += 1;
                        continue;
                    }
                    break;
                }
                Some(j)
            }
            "nohup" | "builtin" | "setsid" | "unbuffer" | "nocache" | "catchsegv" => {
                Some(skip_options(texts, i + 1, &NO_VALUES))
            }
            "command" => {
                let j = skip_options(texts, i + 1, &NO_VALUES);
                if opts_before(j)
                    .iter()
                    .any(|o| o.contains('v') || o.contains('V'))
                {
                    None
                } else {
                    Some(j)
                }
            }
            "exec" => Some(skip_options(
                texts,
                i + 1,
                &Opts {
                    short_val: "a",
                    long_val: &[],
                },
            )),
            "nice" => Some(skip_options(
                texts,
                i + 1,
                &Opts {
                    short_val: "n",
                    long_val: &["adjustment"],
                },
            )),
            "ionice" => {
                let j = skip_options(
                    texts,
                    i + 1,
                    &Opts {
                        short_val: "cnpPu",
                        long_val: &["class", "classdata", "pid", "pgid", "uid"],
                    },
                );
                if opts_before(j)
                    .iter()
                    .any(|o| o.contains('p') || o.contains('P') || o.contains('u'))
                {
                    None
                } else {
                    Some(j)
                }
            }
            "timeout" => Some(
                skip_options(
                    texts,
                    i + 1,
                    &Opts {
                        short_val: "ks",
                        long_val: &["kill-after", "signal"],
                    },
                ) + 1,
            ),
            "time" => Some(skip_options(
                texts,
                i + 1,
                &Opts {
                    short_val: "fo",
                    long_val: &["format", "output"],
                },
            )),
            "xargs" => Some(skip_options(
                texts,
                i + 1,
                &Opts {
                    short_val: "adEILnPs",
                    long_val: &[
                        "arg-file",
                        "delimiter",
                        "eof",
                        "replace",
                        "max-lines",
                        "max-args",
                        "max-procs",
                        "max-chars",
                        "process-slot-var",
                    ],
                },
            )),
            "stdbuf" => Some(skip_options(
                texts,
                i + 1,
                &Opts {
                    short_val: "ioe",
                    long_val: &["input", "output", "error"],
                },
            )),
            "chroot" => Some(
                skip_options(
                    texts,
                    i + 1,
                    &Opts {
                        short_val: "",
                        long_val: &["userspec", "groups"],
                    },
                ) + 1,
            ),
            "taskset" => {
                let j = skip_options(texts, i + 1, &NO_VALUES);
                if opts_before(j).iter().any(|o| o.contains('p')) {
                    None
                } else {
                    Some(j + 1)
                }
            }
            "flock" => {
                let j = skip_options(
                    texts,
                    i + 1,
                    &Opts {
                        short_val: "wEc",
                        long_val: &["timeout", "conflict-exit-code", "command"],
                    },
                );
                if let Some(k) = find_c_value(texts, i + 1) {
                    string_at(self, k, "flock -c");
                    None
                } else {
                    Some(j + 1)
                }
            }
            "busybox" => {
                if texts.get(i + 1).is_some_and(|t| t.starts_with('-')) {
                    None
                } else {
                    Some(i + 1)
                }
            }
            "su" | "runuser" | "sg" => {
                if let Some(k) = find_c_value(texts, i + 1) {
                    string_at(self, k, &format!("{name} -c"));
                    None
                } else if name == "runuser" {
                    let j = skip_options(
                        texts,
                        i + 1,
                        &Opts {
                            short_val: "ugGsw",
                            long_val: &["user", "group", "supp-group", "shell"],
                        },
                    );
                    if opts_before(j).iter().any(|o| o.contains('u')) {
                        Some(j)
                    } else {
                        None
                    }
                } else {
                    None
                }
            }
            "eval" => {
                let rest = words.get(i + 1..).unwrap_or(&[]);
                if rest.is_empty() {
                    return Ok(None);
                }
                if rest.iter().all(Word::literal) {
                    let line = texts.get(i + 1..).unwrap_or(&[]).join(" ");
                    self.sub_parse(&line, via_plus("eval"), false);
                } else {
                    self.st.opaque("`eval` of a computed string".into());
                }
                None
            }
            "trap" => {
                if texts
                    .get(i + 1)
                    .is_some_and(|t| !t.starts_with('-') && texts.len() > i + 2)
                {
                    string_at(self, i + 1, "trap");
                }
                None
            }
            "alias" => {
                for (w, t) in words.iter().zip(texts).skip(i + 1) {
                    if let Some((_, value)) = t.split_once('=') {
                        if w.literal() {
                            self.sub_parse(value, via_plus("alias"), false);
                        } else {
                            self.st.opaque("an alias of a computed string".into());
                        }
                    }
                }
                None
            }
            "watch" => {
                let j = skip_options(
                    texts,
                    i + 1,
                    &Opts {
                        short_val: "n",
                        long_val: &["interval"],
                    },
                );
                if opts_before(j).iter().any(|o| o.contains('x'))
                    || texts
                        .get(i + 1..j)
                        .is_some_and(|ts| ts.iter().any(|t| t == "--exec"))
                {
                    Some(j)
                } else {
                    let rest = words.get(j..).unwrap_or(&[]);
                    if !rest.is_empty() {
                        if rest.iter().all(Word::literal) {
                            let line = texts.get(j..).unwrap_or(&[]).join(" ");
                            self.sub_parse(&line, via_plus("watch"), false);
                        } else {
                            self.st.opaque("`watch` of a computed string".into());
                        }
                    }
                    None
                }
            }
            "find" => {
                let root = texts
                    .get(i + 1)
                    .filter(|t| !t.starts_with('-'))
                    .cloned()
                    .unwrap_or_else(|| ".".into());
                let mut k = i + 1;
                while k < texts.len() {
                    if matches!(texts[k].as_str(), "-exec" | "-execdir" | "-ok" | "-okdir") {
                        let from = k + 1;
                        let mut end = from;
                        while end < texts.len() && texts[end] != ";" && texts[end] != "+" {
                            end += 1;
                        }
                        let sub_texts: Vec<String> = texts[from..end]
                            .iter()
                            .map(|t| if t == "{}" { root.clone() } else { t.clone() })
                            .collect();
                        let sub_words: Vec<Word> = words[from..end]
                            .iter()
                            .zip(&sub_texts)
                            .map(|(w, t)| if w.literal() { Word::lit(t) } else { w.clone() })
                            .collect();
                        self.enter()?;
                        self.run_words(
                            &sub_words,
                            &sub_texts,
                            0,
                            &[],
                            false,
                            via_plus("find -exec"),
                        )?;
                        self.leave();
                        k = end;
                    }
                    k += 1;
                }
                None
            }
            "cd" | "pushd" => {
                let target = texts.get(i + 1).filter(|t| *t != "--");
                let literal = words.get(i + 1).is_none_or(Word::literal);
                self.st.cwd = match target {
                    Some(t) if literal && t.starts_with('/') => Some(normalize_path(t)),
                    Some(t) if literal && !t.starts_with('~') && !t.starts_with('-') => self
                        .st
                        .cwd
                        .as_ref()
                        .map(|d| normalize_path(&format!("{d}/{t}"))),
                    _ => None,
                };
                None
            }
            n if is_shell(n) => {
                let args = texts.get(i + 1..).unwrap_or(&[]);
                if shell_has_c(args) {
                    let j = skip_options(
                        texts,
                        i + 1,
                        &Opts {
                            short_val: "oO",
                            long_val: &["rcfile", "init-file"],
                        },
                    );
                    string_at(self, j, &format!("{n} -c"));
                }
                None
            }
            _ => None,
        })
    }
}

const NO_VALUES: Opts = Opts {
    short_val: "",
    long_val: &[],
};

/// The index of the value of `-c` / `--command` among `texts[from..]`.
fn find_c_value(texts: &[String], from: usize) -> Option<usize> {
    let mut k = from;
    while let Some(t) = texts.get(k) {
        if t == "--command" {
            return Some(k + 1);
        }
        if t.starts_with('-') && !t.starts_with("--") && t.ends_with('c') && t.len() > 1 {
            return Some(k + 1);
        }
        k += 1;
    }
    None
}

fn make_redirect(op: &str, target: &Word) -> Redirect {
    let text = target.text();
    let is_dup = op.ends_with(">&") || op.ends_with("<&");
    let fd_target = text.chars().all(|c| c.is_ascii_digit() || c == '-');
    let heredoc = op.ends_with("<<") || op.ends_with("<<-");
    let writes =
        (op.contains('>') && !(is_dup && fd_target)) && !op.ends_with("<&") || op.contains("<>");
    let target = if !heredoc && !op.ends_with("<<<") && text.starts_with('/') {
        normalize_path(&text)
    } else {
        text
    };
    Redirect {
        op: op.to_string(),
        target,
        writes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progs(line: &str) -> Vec<String> {
        analyse(line)
            .commands
            .into_iter()
            .map(|c| c.program)
            .collect()
    }

    #[test]
    fn structure() {
        assert_eq!(
            progs("ls -la; echo hi && rm x || true"),
            ["ls", "echo", "rm", "true"]
        );
        assert_eq!(progs("sudo -u root rm -rf /"), ["sudo", "rm"]);
        assert_eq!(progs("bash -c 'sh -c \"rm -rf /\"'"), ["bash", "sh", "rm"]);
        assert_eq!(progs("echo $(whoami) `id`"), ["whoami", "id", "echo"]);
        assert_eq!(progs("diff <(ls a) <(ls b)"), ["ls", "ls", "diff"]);
        assert_eq!(progs("{ rm -rf /; }"), ["rm"]);
        assert_eq!(progs("(cd /tmp && ls)"), ["cd", "ls"]);
        assert_eq!(progs("r''m \\rm \"rm\" $'\\x72m'"), ["rm"]);
        assert_eq!(progs("{rm,-rf,/}"), ["rm"]);
        assert_eq!(progs("find / -name x -exec rm -rf {} \\;"), ["find", "rm"]);
        let a = analyse("x=rm; $x -rf /");
        assert!(a.is_opaque(), "{a:?}");
        let a = analyse("echo 'unbalanced");
        assert!(a.is_opaque(), "{a:?}");
        let a = analyse(":(){ :|:& };:");
        assert!(a.fork_bomb, "{a:?}");
        let a = analyse("curl -s x | sudo bash");
        let bash = a.commands.iter().find(|c| c.program == "bash");
        assert!(bash.is_some_and(|c| c.stdin_from_network), "{a:?}");
        let a = analyse("bash <<EOF\nrm -rf /\nEOF\n");
        assert!(a.commands.iter().any(|c| c.program == "rm"), "{a:?}");
        let a = analyse("cat <<'EOF' > f\n$(rm -rf /)\nEOF\nls");
        assert!(!a.is_opaque(), "{a:?}");
        assert_eq!(
            a.commands
                .iter()
                .map(|c| c.program.as_str())
                .collect::<Vec<_>>(),
            ["cat", "ls"]
        );
    }
}
