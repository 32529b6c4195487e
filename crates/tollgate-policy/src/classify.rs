//! SQL classification by parsing: every statement of a string is parsed with sqlparser and its
//! whole tree walked, so comments, casing, several statements in one string and writes hidden
//! in CTEs change nothing. What does not parse is `unparsed`, the riskiest class.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use sqlparser::ast::{
    CopySource, CopyTarget, Expr, ObjectName, ObjectNamePart, ObjectType, Statement, TableFactor,
    Visit, Visitor,
};
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect};
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

/// Broad kind of a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Reads data (SELECT, SHOW, COPY … TO STDOUT, EXPLAIN).
    Read,
    /// Changes data (INSERT, UPDATE, DELETE, MERGE, COPY … FROM).
    Write,
    /// Changes schema (CREATE, ALTER, DROP, TRUNCATE, COMMENT).
    Ddl,
    /// Changes privileges or roles (GRANT, REVOKE, CREATE/ALTER/DROP ROLE).
    Dcl,
    /// BEGIN, COMMIT, ROLLBACK, SAVEPOINT.
    Transaction,
    /// SET, RESET, DISCARD, SHOW of settings.
    Session,
    /// Everything else that parsed (LISTEN, NOTIFY, VACUUM, PREPARE, EXECUTE, DO, CALL, …).
    Utility,
    /// The parser could not read it: treated as the riskiest class.
    Unparsed,
}

impl Kind {
    /// Name used in rules and records.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Write => "write",
            Kind::Ddl => "ddl",
            Kind::Dcl => "dcl",
            Kind::Transaction => "transaction",
            Kind::Session => "session",
            Kind::Utility => "utility",
            Kind::Unparsed => "unparsed",
        }
    }

    /// Parses a rule's kind name.
    pub fn from_name(name: &str) -> Option<Kind> {
        Some(match name {
            "read" => Kind::Read,
            "write" => Kind::Write,
            "ddl" => Kind::Ddl,
            "dcl" => Kind::Dcl,
            "transaction" => Kind::Transaction,
            "session" => Kind::Session,
            "utility" => Kind::Utility,
            "unparsed" => Kind::Unparsed,
            _ => return None,
        })
    }
}

/// Specific facts about a statement that rules match on.
pub const STATEMENT_TAGS: &[&str] = &[
    "drop_database",
    "drop_schema",
    "drop_table",
    "drop_other",
    "truncate",
    "delete_without_where",
    "update_without_where",
    "write_in_cte",
    "grant",
    "revoke",
    "role_change",
    "copy_program",
    "copy_to_client",
    "server_file_access",
    "dangerous_function",
    "dynamic_sql",
    "code_block",
    "prepare",
    "execute_prepared",
    "unparsed",
];

/// One statement's classification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementClass {
    /// Its kind; for a statement with nested ones (a CTE, PREPARE, EXPLAIN ANALYZE, DO), the
    /// most severe kind found anywhere in it.
    pub kind: Kind,
    /// Specific facts, from [`STATEMENT_TAGS`].
    pub tags: BTreeSet<&'static str>,
    /// Tables, schemas and databases it names, lower-cased as PostgreSQL folds them
    /// (`schema.table` when qualified).
    pub objects: BTreeSet<String>,
    /// Functions it calls that reach outside the database or run dynamic SQL.
    pub functions: BTreeSet<String>,
}

impl StatementClass {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            tags: BTreeSet::new(),
            objects: BTreeSet::new(),
            functions: BTreeSet::new(),
        }
    }

    /// The class of a statement the parser could not read.
    pub fn unparsed() -> Self {
        let mut c = Self::new(Kind::Unparsed);
        c.tags.insert("unparsed");
        c
    }
}

/// A whole command string, statement by statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Classification {
    /// One entry per statement, in order.
    pub statements: Vec<StatementClass>,
}

impl Classification {
    /// All kinds present.
    pub fn kinds(&self) -> impl Iterator<Item = Kind> + '_ {
        self.statements.iter().map(|s| s.kind)
    }
}

/// SQL dialects the classifier reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlDialect {
    /// PostgreSQL.
    Postgres,
    /// MySQL / MariaDB.
    MySql,
}

impl SqlDialect {
    fn dialect(self) -> Box<dyn Dialect> {
        match self {
            SqlDialect::Postgres => Box::new(PostgreSqlDialect {}),
            SqlDialect::MySql => Box::new(MySqlDialect {}),
        }
    }
}

/// Functions that read or write server files, reach other servers, stop other sessions, or
/// run SQL from a string.
fn function_tag(name: &str) -> Option<&'static str> {
    Some(match name {
        "pg_read_file"
        | "pg_read_binary_file"
        | "pg_ls_dir"
        | "pg_stat_file"
        | "pg_ls_logdir"
        | "pg_ls_waldir"
        | "pg_ls_tmpdir"
        | "pg_ls_archive_statusdir"
        | "lo_import"
        | "lo_export"
        | "pg_file_write"
        | "pg_file_rename"
        | "pg_file_unlink"
        | "pg_logdir_ls" => "server_file_access",
        "dblink"
        | "dblink_exec"
        | "dblink_open"
        | "dblink_fetch"
        | "dblink_send_query"
        | "query_to_xml"
        | "query_to_xml_and_xmlschema"
        | "query_to_xmlschema"
        | "cursor_to_xml"
        | "ts_stat" => "dynamic_sql",
        "pg_terminate_backend"
        | "pg_cancel_backend"
        | "pg_reload_conf"
        | "pg_rotate_logfile"
        | "pg_promote"
        | "pg_switch_wal"
        | "set_config"
        | "dblink_connect"
        | "dblink_connect_u"
        | "lo_unlink"
        | "pg_create_restore_point"
        | "pg_backup_start"
        | "pg_backup_stop"
        | "pg_drop_replication_slot"
        | "pg_replication_origin_drop" => "dangerous_function",
        _ => return None,
    })
}

fn object_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(i) if i.quote_style.is_some() => i.value.clone(),
            ObjectNamePart::Identifier(i) => i.value.to_lowercase(),
            ObjectNamePart::Function(f) => f.name.value.to_lowercase(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Whether an expression refers to no column at all (`1 = 1`, `true`, `'a' = 'a'`): such a
/// WHERE filters nothing.
fn is_constant(expr: &Expr) -> bool {
    struct Cols(bool);
    impl Visitor for Cols {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            match e {
                Expr::Identifier(_)
                | Expr::CompoundIdentifier(_)
                | Expr::Subquery(_)
                | Expr::Exists { .. } => {
                    self.0 = true;
                    ControlFlow::Break(())
                }
                Expr::Function(_) => {
                    // A function might read the row (or anything else): not constant.
                    self.0 = true;
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            }
        }
    }
    let mut v = Cols(false);
    let _ = expr.visit(&mut v);
    !v.0
}

/// Walks one top-level statement and everything nested in it.
struct Walker {
    class: StatementClass,
    depth: usize,
}

impl Walker {
    fn bump(&mut self, kind: Kind) {
        if severity(kind) > severity(self.class.kind) {
            self.class.kind = kind;
        }
    }
    fn tag(&mut self, tag: &'static str) {
        self.class.tags.insert(tag);
    }
    fn object(&mut self, name: &ObjectName) {
        self.class.objects.insert(object_name(name));
    }
    fn function(&mut self, name: &ObjectName) {
        let name = name
            .0
            .last()
            .map(|p| match p {
                ObjectNamePart::Identifier(i) => i.value.to_lowercase(),
                ObjectNamePart::Function(f) => f.name.value.to_lowercase(),
            })
            .unwrap_or_default();
        if let Some(tag) = function_tag(&name) {
            self.tag(tag);
            self.class.functions.insert(name);
        }
    }
}

/// Order used to pick a statement's kind when it nests several.
fn severity(kind: Kind) -> u8 {
    match kind {
        Kind::Transaction => 0,
        Kind::Session => 1,
        Kind::Read => 2,
        Kind::Utility => 3,
        Kind::Write => 4,
        Kind::Ddl => 5,
        Kind::Dcl => 6,
        Kind::Unparsed => 7,
    }
}

impl Visitor for Walker {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        self.object(relation);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr {
            self.function(&f.name);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        // Set-returning functions in FROM: `SELECT * FROM dblink(...)`.
        match factor {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => self.function(name),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, st: &Statement) -> ControlFlow<()> {
        let nested = self.depth > 0;
        self.depth += 1;
        use Statement as S;
        match st {
            S::Query(_) => self.bump(Kind::Read),
            S::Insert(_) | S::Merge(_) => {
                self.bump(Kind::Write);
                if nested {
                    self.tag("write_in_cte");
                }
            }
            S::Update(u) => {
                self.bump(Kind::Write);
                if nested {
                    self.tag("write_in_cte");
                }
                if u.selection.as_ref().is_none_or(is_constant) {
                    self.tag("update_without_where");
                }
            }
            S::Delete(d) => {
                self.bump(Kind::Write);
                if nested {
                    self.tag("write_in_cte");
                }
                for t in &d.tables {
                    self.object(t);
                }
                if d.selection.as_ref().is_none_or(is_constant) && d.using.is_none() {
                    self.tag("delete_without_where");
                }
            }
            S::Copy {
                source, to, target, ..
            } => {
                if let CopySource::Table { table_name, .. } = source {
                    self.object(table_name);
                }
                self.bump(if *to { Kind::Read } else { Kind::Write });
                match target {
                    CopyTarget::Program { .. } => self.tag("copy_program"),
                    CopyTarget::File { .. } => self.tag("server_file_access"),
                    CopyTarget::Stdout if *to => self.tag("copy_to_client"),
                    CopyTarget::Stdin | CopyTarget::Stdout => {}
                }
            }
            S::Truncate(t) => {
                self.bump(Kind::Ddl);
                self.tag("truncate");
                for target in &t.table_names {
                    self.object(&target.name);
                }
            }
            S::Drop {
                object_type, names, ..
            } => {
                let (kind, tag) = match object_type {
                    ObjectType::Database => (Kind::Ddl, "drop_database"),
                    ObjectType::Schema => (Kind::Ddl, "drop_schema"),
                    ObjectType::Table | ObjectType::ForeignTable => (Kind::Ddl, "drop_table"),
                    ObjectType::Role | ObjectType::User | ObjectType::Group => {
                        (Kind::Dcl, "role_change")
                    }
                    _ => (Kind::Ddl, "drop_other"),
                };
                self.bump(kind);
                self.tag(tag);
                for n in names {
                    self.object(n);
                }
            }
            S::Grant(_) | S::GrantRole(_) | S::AlterDefaultPrivileges(_) => {
                self.bump(Kind::Dcl);
                self.tag("grant");
            }
            S::Revoke(_) | S::RevokeRole(_) => {
                self.bump(Kind::Dcl);
                self.tag("revoke");
            }
            S::CreateRole(_) | S::AlterRole { .. } | S::CreateUser(_) | S::AlterUser(_) => {
                self.bump(Kind::Dcl);
                self.tag("role_change");
            }
            S::StartTransaction { .. }
            | S::Commit { .. }
            | S::Rollback { .. }
            | S::Savepoint { .. }
            | S::ReleaseSavepoint { .. } => self.bump(Kind::Transaction),
            S::Set(_)
            | S::Reset(_)
            | S::Discard { .. }
            | S::ShowVariable { .. }
            | S::ShowVariables { .. } => self.bump(Kind::Session),
            S::ShowTables { .. }
            | S::ShowColumns { .. }
            | S::ShowDatabases { .. }
            | S::ShowSchemas { .. }
            | S::ShowCreate { .. }
            | S::ShowFunctions { .. }
            | S::ShowViews { .. }
            | S::ShowStatus { .. }
            | S::ShowCollation { .. }
            | S::Fetch { .. }
            | S::Declare { .. }
            | S::ExplainTable { .. } => self.bump(Kind::Read),
            S::Explain { analyze, .. } => {
                // EXPLAIN ANALYZE runs its statement; the nested statement is walked either way,
                // and without ANALYZE its kind is only read.
                self.bump(Kind::Read);
                if !*analyze {
                    self.depth += 1000;
                }
            }
            S::Prepare { .. } => {
                self.bump(Kind::Utility);
                self.tag("prepare");
            }
            S::Execute { .. } => {
                self.bump(Kind::Utility);
                self.tag("execute_prepared");
            }
            S::Call(_) => self.bump(Kind::Write),
            S::LoadData { .. }
            | S::Unload { .. }
            | S::Directory { .. }
            | S::Install { .. }
            | S::Load { .. } => {
                self.bump(Kind::Utility);
                self.tag("server_file_access");
            }
            S::Kill { .. } => {
                self.bump(Kind::Utility);
                self.tag("dangerous_function");
            }
            S::CreateView(_)
            | S::CreateTable(_)
            | S::CreateVirtualTable { .. }
            | S::CreateIndex(_)
            | S::CreateSchema { .. }
            | S::CreateDatabase { .. }
            | S::CreateFunction(_)
            | S::CreateTrigger(_)
            | S::CreateProcedure { .. }
            | S::CreateSequence { .. }
            | S::CreateType { .. }
            | S::CreateDomain(_)
            | S::CreateExtension(_)
            | S::CreatePolicy(_)
            | S::CreateRule(_)
            | S::AlterTable(_)
            | S::AlterSchema(_)
            | S::AlterIndex { .. }
            | S::AlterView(_)
            | S::AlterFunction(_)
            | S::AlterType(_)
            | S::AlterPolicy(_)
            | S::AlterTrigger(_)
            | S::Comment { .. }
            | S::RenameTable(_)
            | S::RefreshMaterializedView(_) => self.bump(Kind::Ddl),
            S::DropFunction(_)
            | S::DropDomain(_)
            | S::DropProcedure { .. }
            | S::DropPolicy(_)
            | S::DropRule(_)
            | S::DropExtension(_)
            | S::DropTrigger(_) => {
                self.bump(Kind::Ddl);
                self.tag("drop_other");
            }
            _ => self.bump(Kind::Utility),
        }
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, st: &Statement) -> ControlFlow<()> {
        if let Statement::Explain { analyze: false, .. } = st {
            self.depth -= 1000;
        }
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

/// Classifies parsed statements.
fn classify_statements(statements: &[Statement]) -> Vec<StatementClass> {
    statements
        .iter()
        .map(|st| {
            let mut w = Walker {
                class: StatementClass::new(Kind::Transaction),
                depth: 0,
            };
            let _ = st.visit(&mut w);
            let mut class = w.class;
            // Kinds found only under EXPLAIN (without ANALYZE) do not run.
            if let Statement::Explain { analyze: false, .. } = st {
                class.kind = Kind::Read;
                class.tags.retain(|t| {
                    matches!(
                        *t,
                        "dangerous_function" | "server_file_access" | "dynamic_sql"
                    )
                });
            }
            class
        })
        .collect()
}

/// The leading keyword, skipping whitespace and comments.
fn first_word(tokens: &[Token]) -> Option<String> {
    tokens.iter().find_map(|t| match t {
        Token::Whitespace(_) => None,
        Token::Word(w) => Some(w.value.to_ascii_uppercase()),
        _ => Some(String::new()),
    })
}

/// Splits a token stream at top-level semicolons.
fn split_statements(tokens: &[Token]) -> Vec<&[Token]> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, t) in tokens.iter().enumerate() {
        if *t == Token::SemiColon {
            out.push(&tokens[start..i]);
            start = i + 1;
        }
    }
    out.push(&tokens[start..]);
    out.retain(|s| {
        s.iter()
            .any(|t| !matches!(t, Token::Whitespace(_) | Token::EOF))
    });
    out
}

/// Classifies a `DO` block: the statements of its body that parse as SQL are classified like
/// any other; procedural lines that do not (IF, RAISE, loops) make it `unparsed`, and a dynamic
/// `EXECUTE` makes it `dynamic_sql`.
fn classify_do(tokens: &[Token], dialect: SqlDialect, depth: usize) -> StatementClass {
    let mut class = StatementClass::new(Kind::Utility);
    class.tags.insert("code_block");
    let body = tokens.iter().find_map(|t| match t {
        Token::DollarQuotedString(s) => Some(s.value.clone()),
        Token::SingleQuotedString(s) | Token::EscapedStringLiteral(s) => Some(s.clone()),
        _ => None,
    });
    let Some(body) = body else {
        return StatementClass::unparsed();
    };
    if depth > 3 {
        return StatementClass::unparsed();
    }
    let inner = classify_text(&body, dialect, depth + 1);
    for s in inner.statements {
        if severity(s.kind) > severity(class.kind) {
            class.kind = s.kind;
        }
        class.tags.extend(s.tags);
        class.objects.extend(s.objects);
        class.functions.extend(s.functions);
    }
    class
}

/// Words that begin PL/pgSQL block structure rather than SQL; they are skipped so the SQL
/// inside a DO body is still classified.
fn plpgsql_noise(word: &str) -> bool {
    matches!(word, "BEGIN" | "END" | "DECLARE" | "EXCEPTION")
}

fn classify_text(sql: &str, dialect: SqlDialect, depth: usize) -> Classification {
    let d = dialect.dialect();
    let tokens = match Tokenizer::new(d.as_ref(), sql).tokenize() {
        Ok(t) => t,
        Err(_) => {
            return Classification {
                statements: vec![StatementClass::unparsed()],
            };
        }
    };
    if longest_run(&tokens) > MAX_RUN {
        // A very long chain of operators at one level (`1 + 1 + 1 …`) parses into a tree deep
        // enough to overflow a thread's stack when it is built or dropped: never parse it.
        return Classification {
            statements: vec![StatementClass::unparsed()],
        };
    }
    if dialect == SqlDialect::MySql && has_executable_comment(&tokens) {
        // MySQL runs `/*! ... */` as code: never read it as a comment.
        return Classification {
            statements: vec![StatementClass::unparsed()],
        };
    }
    let mut statements = Vec::new();
    // The tokenizer reads the lines after `COPY … FROM STDIN;` as inline COPY data, as in a psql
    // script. On the wire a Query string is all SQL (COPY data only comes in CopyData messages),
    // so those lines are statements the server will run: classify them as such.
    for t in &tokens {
        if let Token::CopyData { data, .. } = t {
            if depth > 3 {
                statements.push(StatementClass::unparsed());
            } else {
                statements.extend(classify_text(data, dialect, depth + 1).statements);
            }
        }
    }
    for part in split_statements(&tokens) {
        let mut part: Vec<Token> = part.to_vec();
        // Inside DO bodies, drop block keywords so `BEGIN DROP TABLE t; END` reads as `DROP TABLE t`.
        if depth > 0 {
            while let Some(w) = first_word(&part).filter(|w| plpgsql_noise(w)) {
                let at = part
                    .iter()
                    .position(|t| matches!(t, Token::Word(x) if x.value.eq_ignore_ascii_case(&w)));
                match at {
                    Some(i) => {
                        part.remove(i);
                    }
                    None => break,
                }
            }
            if first_word(&part).is_none() {
                continue;
            }
            if first_word(&part).as_deref() == Some("EXECUTE") {
                let mut c = StatementClass::unparsed();
                c.tags.insert("dynamic_sql");
                statements.push(c);
                continue;
            }
            if first_word(&part).as_deref() == Some("PERFORM") {
                // PERFORM expr is SELECT expr.
                if let Some(i) = part.iter().position(|t| matches!(t, Token::Word(_))) {
                    part[i] = Token::make_keyword("SELECT");
                }
            }
        }
        if first_word(&part).as_deref() == Some("DO") {
            statements.push(classify_do(&part, dialect, depth));
            continue;
        }
        let first = first_word(&part);
        if first.as_deref() == Some("COPY") {
            copy_option_booleans(&mut part);
        }
        let maintenance = matches!(first.as_deref(), Some("VACUUM" | "ANALYZE"))
            .then(|| maintenance_class(&part));
        let parsed = Parser::new(d.as_ref()).with_tokens(part).parse_statements();
        match (parsed, maintenance) {
            (Ok(sts), _) if !sts.is_empty() => statements.extend(classify_statements(&sts)),
            (Ok(_), _) => {}
            (Err(_), Some(Some(class))) => statements.push(class),
            (Err(_), _) => statements.push(StatementClass::unparsed()),
        }
    }
    if statements.is_empty() {
        // Only whitespace or comments: nothing runs.
        statements.push(StatementClass::new(Kind::Utility));
    }
    Classification { statements }
}

/// Most tokens allowed in one run: a stretch at one bracket depth with no comma or semicolon.
/// Lists (`VALUES (…), (…)`, `IN (1, 2, …)`) stay short by this measure however long they are;
/// only chains of operators grow it.
const MAX_RUN: usize = 2000;

/// The longest run of tokens at one bracket depth between commas and semicolons.
fn longest_run(tokens: &[Token]) -> usize {
    let mut runs: Vec<usize> = vec![0];
    let mut longest = 0;
    for t in tokens {
        match t {
            Token::Whitespace(_) | Token::EOF => {}
            Token::LParen | Token::LBracket | Token::LBrace => runs.push(0),
            Token::RParen | Token::RBracket | Token::RBrace => {
                if runs.len() > 1 {
                    runs.pop();
                }
                if let Some(r) = runs.last_mut() {
                    *r += 1;
                }
            }
            Token::Comma | Token::SemiColon => {
                if let Some(r) = runs.last_mut() {
                    *r = 0;
                }
            }
            _ => {
                if let Some(r) = runs.last_mut() {
                    *r += 1;
                    longest = longest.max(*r);
                }
            }
        }
    }
    longest
}

fn has_executable_comment(tokens: &[Token]) -> bool {
    tokens.iter().any(|t| {
        matches!(t, Token::Whitespace(sqlparser::tokenizer::Whitespace::MultiLineComment(c)) if c.starts_with('!'))
    })
}

/// PostgreSQL accepts `ON`/`OFF` for boolean COPY options (`WITH (FREEZE ON)`); the parser only
/// `TRUE`/`FALSE`. Rewrites them inside the option list, which comes after the top-level
/// STDIN/STDOUT/file/PROGRAM target.
fn copy_option_booleans(tokens: &mut [Token]) {
    let mut depth = 0i32;
    let mut target_seen = false;
    for t in tokens.iter_mut() {
        match t {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Word(w)
                if depth == 0
                    && matches!(
                        w.value.to_ascii_uppercase().as_str(),
                        "STDIN" | "STDOUT" | "PROGRAM"
                    ) =>
            {
                target_seen = true
            }
            Token::SingleQuotedString(_) if depth == 0 => target_seen = true,
            Token::Word(w) if depth == 1 && target_seen && w.quote_style.is_none() => {
                match w.value.to_ascii_uppercase().as_str() {
                    "ON" => *t = Token::make_keyword("TRUE"),
                    "OFF" => *t = Token::make_keyword("FALSE"),
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

/// `VACUUM`/`ANALYZE` forms the parser does not know (`VACUUM ANALYZE t`, `VACUUM (VERBOSE) t`):
/// a maintenance command made only of words, names, commas and parentheses.
fn maintenance_class(tokens: &[Token]) -> Option<StatementClass> {
    let mut class = StatementClass::new(Kind::Utility);
    let mut depth = 0;
    let mut current = String::new();
    let mut after_period = false;
    for t in tokens
        .iter()
        .skip_while(|t| !matches!(t, Token::Word(_)))
        .skip(1)
    {
        match t {
            Token::Whitespace(_) | Token::EOF => {}
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            // The parenthesized option list: VERBOSE, ANALYZE, PARALLEL 4, …
            Token::Word(_) | Token::Number(..) | Token::Comma if depth > 0 => {}
            Token::Word(w) => {
                let part = if w.quote_style.is_some() {
                    w.value.clone()
                } else {
                    w.value.to_lowercase()
                };
                if after_period {
                    current.push('.');
                    current.push_str(&part);
                    after_period = false;
                } else if current.is_empty() && is_maintenance_word(&w.value) {
                    // An option keyword before the first table name.
                } else {
                    if !current.is_empty() {
                        class.objects.insert(std::mem::take(&mut current));
                    }
                    current = part;
                }
            }
            Token::Period => after_period = true,
            Token::Comma => {
                if !current.is_empty() {
                    class.objects.insert(std::mem::take(&mut current));
                }
            }
            _ => return None,
        }
    }
    if !current.is_empty() {
        class.objects.insert(current);
    }
    Some(class)
}

fn is_maintenance_word(w: &str) -> bool {
    matches!(
        w.to_ascii_uppercase().as_str(),
        "VACUUM" | "ANALYZE" | "ANALYSE" | "FULL" | "FREEZE" | "VERBOSE" | "SKIP_LOCKED"
    )
}

/// Classifies a command string (one or several statements).
pub fn classify(sql: &str, dialect: SqlDialect) -> Classification {
    classify_text(sql, dialect, 0)
}

/// A cache of classifications keyed by the statement with its numeric literals and comments
/// removed. Numbers never change a classification (strings may: they can hold a DO body), so
/// `... WHERE id = 1` and `... WHERE id = 2` share one entry.
pub struct ClassifierCache {
    dialect: SqlDialect,
    map: RwLock<HashMap<String, Arc<Classification>>>,
    capacity: usize,
}

impl ClassifierCache {
    /// A cache holding at most `capacity` shapes (cleared when full).
    pub fn new(dialect: SqlDialect, capacity: usize) -> Self {
        Self {
            dialect,
            map: RwLock::new(HashMap::new()),
            capacity,
        }
    }

    /// Classifies `sql`, reusing the result for statements of the same shape.
    pub fn classify(&self, sql: &str) -> Arc<Classification> {
        let Some(key) = shape_key(sql, self.dialect) else {
            return Arc::new(classify(sql, self.dialect));
        };
        if let Some(hit) = self.map.read().ok().and_then(|m| m.get(&key).cloned()) {
            return hit;
        }
        let class = Arc::new(classify(sql, self.dialect));
        if let Ok(mut m) = self.map.write() {
            if m.len() >= self.capacity {
                m.clear();
            }
            m.insert(key, Arc::clone(&class));
        }
        class
    }
}

/// The statement with its numeric literals replaced by `?`, found by a small lexer that skips
/// strings (standard, `E''` with backslash escapes, dollar-quoted), quoted identifiers and
/// comments verbatim. `None` (no caching) when the text has anything it does not fully
/// understand: an unterminated string or comment, a MySQL executable comment, a number glued
/// to a word.
fn shape_key(sql: &str, dialect: SqlDialect) -> Option<String> {
    let b = sql.as_bytes();
    if dialect == SqlDialect::MySql && b.contains(&b'\\') {
        // MySQL strings take backslash escapes in both quote styles: do not guess.
        return None;
    }
    let mut key = Vec::with_capacity(b.len());
    // MySQL names may hold `@` (`t@1`, `@var`); a digit after it is part of the name.
    let mysql = dialect == SqlDialect::MySql;
    let ident = |c: u8| {
        c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 || (mysql && c == b'@')
    };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' => {
                let escapes = dialect == SqlDialect::MySql
                    || (i > 0
                        && (b[i - 1] == b'e' || b[i - 1] == b'E')
                        && (i < 2 || !ident(b[i - 2])));
                let start = i;
                i += 1;
                loop {
                    match b.get(i)? {
                        b'\\' if escapes => i += 2,
                        b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
                        b'\'' => break,
                        _ => i += 1,
                    }
                }
                i += 1;
                key.extend_from_slice(b.get(start..i)?);
            }
            b'"' | b'`' => {
                let start = i;
                i += 1;
                while *b.get(i)? != c {
                    i += 1;
                }
                i += 1;
                key.extend_from_slice(&b[start..i]);
            }
            b'$' if i == 0 || !ident(b[i - 1]) => {
                // $tag$ ... $tag$ (or $1, a parameter: kept as is).
                let tag_end = b[i + 1..]
                    .iter()
                    .position(|&x| !(x.is_ascii_alphanumeric() || x == b'_'))
                    .map_or(b.len(), |p| i + 1 + p);
                if b.get(tag_end) == Some(&b'$') && !b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    let tag = &b[i..=tag_end];
                    let body_start = tag_end + 1;
                    let close = b[body_start..].windows(tag.len()).position(|w| w == tag)?;
                    let end = body_start + close + tag.len();
                    key.extend_from_slice(&b[i..end]);
                    i = end;
                } else {
                    key.extend_from_slice(&b[i..tag_end]);
                    i = tag_end;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                let end = b[i..]
                    .iter()
                    .position(|&x| x == b'\n')
                    .map_or(b.len(), |p| i + p);
                key.extend_from_slice(&b[i..end]);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                if b.get(i + 2) == Some(&b'!') {
                    return None;
                }
                let start = i;
                let mut depth = 0;
                loop {
                    if b.get(i) == Some(&b'/') && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b.get(i) == Some(&b'*') && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else if i >= b.len() {
                        return None;
                    } else {
                        i += 1;
                    }
                }
                key.extend_from_slice(&b[start..i]);
            }
            b'0'..=b'9' if i == 0 || !(ident(b[i - 1]) || b[i - 1] == b'.') => {
                // Strictly `digits [. digits] [e [+-] digits]`; anything else glued to it (a
                // letter, a second dot, an `e` without digits) is left to the tokenizer: no key.
                let digits = |i: &mut usize| {
                    let start = *i;
                    while b.get(*i).is_some_and(u8::is_ascii_digit) {
                        *i += 1;
                    }
                    *i > start
                };
                digits(&mut i);
                if b.get(i) == Some(&b'.') {
                    i += 1;
                    if !digits(&mut i) {
                        return None;
                    }
                }
                if matches!(b.get(i), Some(b'e' | b'E')) {
                    i += 1;
                    if matches!(b.get(i), Some(b'+' | b'-')) {
                        i += 1;
                    }
                    if !digits(&mut i) {
                        return None;
                    }
                }
                if b.get(i)
                    .is_some_and(|&x| ident(x) || x == b'.' || x == b'\'' || x == b'"')
                {
                    return None;
                }
                key.push(b'?');
            }
            _ => {
                key.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(key).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Option<String> {
        shape_key(s, SqlDialect::Postgres)
    }

    #[test]
    fn shape_keys_replace_numbers_only() {
        assert_eq!(
            key("SELECT a FROM t WHERE id = 42").as_deref(),
            Some("SELECT a FROM t WHERE id = ?")
        );
        assert_eq!(key("SELECT 1.5e3, 7").as_deref(), Some("SELECT ?, ?"));
        assert_eq!(
            key("SELECT t1.c2 FROM t1 WHERE x = $1").as_deref(),
            Some("SELECT t1.c2 FROM t1 WHERE x = $1")
        );
        assert_eq!(
            key("SELECT '12', \"3\" -- 4\n").as_deref(),
            Some("SELECT '12', \"3\" -- 4\n")
        );
        assert_eq!(
            key("DO $$ DELETE FROM t WHERE 1 = 1 $$").as_deref(),
            Some("DO $$ DELETE FROM t WHERE 1 = 1 $$")
        );
        assert_eq!(
            key("DO $x$ 1 $x$ ; SELECT 2").as_deref(),
            Some("DO $x$ 1 $x$ ; SELECT ?")
        );
        assert_eq!(
            key("SELECT E'\\' 1' , 2").as_deref(),
            Some("SELECT E'\\' 1' , ?")
        );
        assert_eq!(
            key("SELECT 'it''s 1', 2").as_deref(),
            Some("SELECT 'it''s 1', ?")
        );
        assert_eq!(
            key("SELECT /* 1 /* 2 */ 3 */ 4").as_deref(),
            Some("SELECT /* 1 /* 2 */ 3 */ ?")
        );
        assert!(key("SELECT 'open").is_none());
        assert!(key("SELECT $$open").is_none());
        assert!(key("SELECT /* open").is_none());
        assert!(key("SELECT 1abc").is_none());
        assert!(key("SELECT 1e-- 0").is_none());
        assert!(key("SELECT 1..2").is_none());
        assert!(key("SELECT 1.e5").is_none());
        assert_eq!(key("SELECT 1- 0").as_deref(), Some("SELECT ?- ?"));
        assert!(shape_key("SELECT /*! 1 */ 2", SqlDialect::MySql).is_none());
        assert!(shape_key("SELECT 'a\\'' 1", SqlDialect::MySql).is_none());
    }

    #[test]
    fn cached_and_fresh_classifications_agree_when_only_numbers_differ() {
        let cache = ClassifierCache::new(SqlDialect::Postgres, 100);
        for sql in [
            "DELETE FROM t WHERE id = 1",
            "DELETE FROM t WHERE 1 = 1",
            "DO $$ BEGIN DELETE FROM t WHERE id = 2; END $$",
            "DO $$ BEGIN DELETE FROM t WHERE 2 = 2; END $$",
            "DO E'BEGIN DELETE FROM t WHERE id = 3; END'",
            "DO E'BEGIN DELETE FROM t WHERE 3 = 3; END'",
        ] {
            assert_eq!(
                *cache.classify(sql),
                classify(sql, SqlDialect::Postgres),
                "{sql}"
            );
        }
    }

    #[test]
    fn operator_chains_too_long_to_parse_safely_are_unparsed() {
        let long = format!("SELECT 1{}", " + 1".repeat(40_000));
        let c = classify(&long, SqlDialect::Postgres);
        assert_eq!(c.statements[0].kind, Kind::Unparsed);
        let ors = format!("DELETE FROM t WHERE a = 1{}", " OR a = 1".repeat(5_000));
        assert_eq!(
            classify(&ors, SqlDialect::Postgres).statements[0].kind,
            Kind::Unparsed
        );
        // Long lists are fine.
        let values = format!("INSERT INTO t VALUES (1){}", ", (1)".repeat(20_000));
        assert_eq!(
            classify(&values, SqlDialect::Postgres).statements[0].kind,
            Kind::Write
        );
        let list = format!("SELECT * FROM t WHERE id IN (1{})", ", 1".repeat(20_000));
        assert_eq!(
            classify(&list, SqlDialect::Postgres).statements[0].kind,
            Kind::Read
        );
    }

    #[test]
    fn classification_details() {
        let c = classify(
            "WITH d AS (DELETE FROM Orders RETURNING *) SELECT * FROM d; VACUUM ANALYZE public.users, \"Mixed\"",
            SqlDialect::Postgres,
        );
        assert_eq!(c.statements.len(), 2);
        assert_eq!(c.statements[0].kind, Kind::Write);
        assert!(
            c.statements[0].tags.contains("write_in_cte")
                && c.statements[0].tags.contains("delete_without_where")
        );
        assert!(c.statements[0].objects.contains("orders"));
        assert_eq!(c.statements[1].kind, Kind::Utility);
        assert!(
            c.statements[1].objects.contains("public.users")
                && c.statements[1].objects.contains("Mixed")
        );
        let c = classify(
            "SELECT * FROM dblink('x', 'y') AS t(a int)",
            SqlDialect::Postgres,
        );
        assert!(c.statements[0].functions.contains("dblink"));
        let c = classify("EXPLAIN DELETE FROM t", SqlDialect::Postgres);
        assert_eq!(c.statements[0].kind, Kind::Read);
        assert!(c.statements[0].tags.is_empty());
        let c = classify("SELECT 1 /*! DROP TABLE t */", SqlDialect::MySql);
        assert_eq!(c.statements[0].kind, Kind::Unparsed);
    }
}
