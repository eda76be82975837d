//! The hand-written declarations of `masq::sys` against `include/masq.h`,
//! checked twice:
//!
//! 1. a small parser reads the header's prototypes, function-pointer
//!    typedefs, structs, opaque handles and `#define`s, translates each C
//!    type into the Rust spelling it must have, and compares names, parameter
//!    names and types, return types, members and constant values with what
//!    `sys` records of its own declarations (both directions: nothing
//!    missing, nothing extra);
//! 2. a C program generated from `sys`'s declarations is compiled by the
//!    system `cc` against the header: `__builtin_types_compatible_p` asserts
//!    every function's type, every callback typedef and every struct member
//!    type (qualifiers included), `_Static_assert`s every constant, and the
//!    program prints each struct's size, alignment and member offsets, which
//!    must equal Rust's.
//!
//! Each check also proves it can fail: a deliberately wrong declaration
//! must be reported.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use masq::sys;

fn header_path() -> PathBuf {
    let include = std::env::var_os("MASQ_INCLUDE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../include"));
    include.join("masq.h")
}

/// masq.h and, after it, the unstable primitives of masq_crypto.h (sys declares both).
fn header_text() -> String {
    let path = header_path();
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {}", path.display(), e));
    let crypto = path.with_file_name("masq_crypto.h");
    text.push('\n');
    text.push_str(&std::fs::read_to_string(&crypto).unwrap_or_else(|e| panic!("cannot read {}: {}", crypto.display(), e)));
    text
}

/// Whitespace-free spelling, so `* const c_char` and `*const c_char` compare equal.
fn norm(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

// ---- 1. the header, parsed ----------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct CParam {
    name: String,
    rust: String,
}

#[derive(Debug, Clone, PartialEq)]
struct CFunction {
    name: String,
    params: Vec<CParam>,
    ret: String,
}

#[derive(Debug, Default)]
struct Header {
    functions: BTreeMap<String, CFunction>,
    callbacks: BTreeMap<String, CFunction>,
    structs: BTreeMap<String, Vec<CParam>>,
    opaque: BTreeSet<String>,
    int_constants: BTreeMap<String, i128>,
    string_constants: BTreeMap<String, String>,
}

/// Remove comments (keeping string literals intact).
fn strip_comments(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' {
            let start = i;
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str(&text[start..i.min(b.len())]);
        } else if text[i..].starts_with("/*") {
            let end = text[i + 2..].find("*/").expect("unterminated comment") + i + 4;
            // Keep line structure for the preprocessor pass.
            out.extend(text[i..end].chars().filter(|&c| c == '\n'));
            out.push(' ');
            i = end;
        } else if text[i..].starts_with("//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn parse_int(text: &str) -> Option<i128> {
    let t = text.trim().trim_end_matches(&['u', 'U', 'l', 'L'][..]);
    // The <stdint.h> limits a #define may name.
    let limit = match t {
        "UINT64_MAX" => Some(u64::MAX as i128),
        "UINT32_MAX" => Some(u32::MAX as i128),
        "INT64_MAX" => Some(i64::MAX as i128),
        "INT32_MAX" => Some(i32::MAX as i128),
        "SIZE_MAX" => Some(usize::MAX as i128),
        _ => None,
    };
    if limit.is_some() {
        return limit;
    }
    if let Some(hex) = t.strip_prefix("0x") {
        i128::from_str_radix(hex, 16).ok()
    } else {
        t.parse().ok()
    }
}

/// Handle preprocessor lines: record `#define`s, drop `#ifdef __cplusplus`
/// blocks (the `extern "C"` wrapper); return the declarations' text.
fn preprocess(text: &str, header: &mut Header) -> String {
    let mut code = String::new();
    let mut skipping: Vec<bool> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(directive) = t.strip_prefix('#') {
            let mut words = directive.trim().splitn(2, char::is_whitespace);
            let keyword = words.next().unwrap_or("");
            let rest = words.next().unwrap_or("").trim();
            match keyword {
                "ifdef" | "ifndef" | "if" => skipping.push(keyword == "ifdef" && rest == "__cplusplus"),
                "endif" => {
                    skipping.pop().expect("unbalanced #endif");
                }
                "define" if !skipping.iter().any(|&s| s) => {
                    let mut parts = rest.splitn(2, char::is_whitespace);
                    let name = parts.next().unwrap().to_string();
                    let value = parts.next().unwrap_or("").trim();
                    if value.is_empty() {
                        continue; // include guard
                    }
                    if let Some(s) = value.strip_prefix('"') {
                        header.string_constants.insert(name, s.trim_end_matches('"').to_string());
                    } else {
                        let v =
                            parse_int(value).unwrap_or_else(|| panic!("#define {} {}: not an integer", name, value));
                        header.int_constants.insert(name, v);
                    }
                }
                "include" | "define" => {}
                other => panic!("unexpected directive #{} in masq.h: update this parser", other),
            }
            continue;
        }
        if !skipping.iter().any(|&s| s) {
            code.push_str(line);
            code.push('\n');
        }
    }
    code
}

fn tokenize(code: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(chars[start..i].iter().collect());
        } else if "(){}[]*,;".contains(c) {
            tokens.push(c.to_string());
            i += 1;
        } else {
            panic!("unexpected character {:?} in masq.h declarations: update this parser", c);
        }
    }
    tokens
}

/// The Rust spelling a C type must have in `sys` (whitespace-free).
/// `array` marks a parameter declared as an array (it is a pointer).
fn rust_type(tokens: &[String], array: bool, callbacks: &BTreeSet<String>, is_return: bool) -> String {
    let mut base: Option<String> = None;
    let mut base_const = false;
    let mut stars: Vec<bool> = Vec::new(); // per '*': whether a const follows it
    for t in tokens {
        match t.as_str() {
            "const" => {
                if let Some(last) = stars.last_mut() {
                    *last = true;
                } else {
                    base_const = true;
                }
            }
            "*" => stars.push(false),
            "struct" => {}
            name => {
                assert!(base.is_none(), "two base types in {:?}", tokens);
                base = Some(name.to_string());
            }
        }
    }
    if array {
        stars.push(false);
    }
    let base = base.unwrap_or_else(|| panic!("no base type in {:?}", tokens));
    let mut out = match base.as_str() {
        "void" if stars.is_empty() && is_return => "()".to_string(),
        "void" => "c_void".to_string(),
        "int" => "c_int".to_string(),
        "char" => "c_char".to_string(),
        "uint8_t" => "u8".to_string(),
        "uint32_t" => "u32".to_string(),
        "uint64_t" => "u64".to_string(),
        "int64_t" => "i64".to_string(),
        "int32_t" => "i32".to_string(),
        "uint16_t" => "u16".to_string(),
        "size_t" => "usize".to_string(),
        "double" => "f64".to_string(),
        name if callbacks.contains(name) && stars.is_empty() => format!("Option<{}>", name),
        name if name.starts_with("masq_") => name.to_string(),
        other => panic!("C type {} has no Rust mapping here: update this test", other),
    };
    let mut pointee_const = base_const;
    for s in stars {
        out = format!("*{}{}", if pointee_const { "const" } else { "mut" }, out);
        pointee_const = s;
    }
    out
}

fn split_commas(tokens: &[String]) -> Vec<Vec<String>> {
    let mut parts = vec![Vec::new()];
    let mut depth = 0;
    for t in tokens {
        match t.as_str() {
            "(" | "[" => depth += 1,
            ")" | "]" => depth -= 1,
            "," if depth == 0 => {
                parts.push(Vec::new());
                continue;
            }
            _ => {}
        }
        parts.last_mut().unwrap().push(t.clone());
    }
    parts
}

/// A declarator: type tokens, then the name, then an optional `[N]`.
fn declarator(tokens: &[String], callbacks: &BTreeSet<String>) -> CParam {
    let mut t = tokens.to_vec();
    let array = t.last().map(String::as_str) == Some("]");
    if array {
        let open = t.iter().rposition(|x| x == "[").expect("[");
        t.truncate(open);
    }
    let name = t.pop().unwrap_or_else(|| panic!("empty declarator {:?}", tokens));
    assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "unnamed parameter in {:?}", tokens);
    CParam { name, rust: rust_type(&t, array, callbacks, false) }
}

fn params(tokens: &[String], callbacks: &BTreeSet<String>) -> Vec<CParam> {
    if tokens.len() == 1 && tokens[0] == "void" {
        return Vec::new();
    }
    split_commas(tokens).iter().map(|p| declarator(p, callbacks)).collect()
}

fn matching(tokens: &[String], open: usize) -> usize {
    let (o, c) = match tokens[open].as_str() {
        "(" => ("(", ")"),
        "{" => ("{", "}"),
        other => panic!("not a bracket: {}", other),
    };
    let mut depth = 0;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        if t == o {
            depth += 1;
        } else if t == c {
            depth -= 1;
            if depth == 0 {
                return i;
            }
        }
    }
    panic!("unbalanced {}", o)
}

fn parse_header(text: &str) -> Header {
    let mut header = Header::default();
    let code = preprocess(&strip_comments(text), &mut header);
    let tokens = tokenize(&code);

    // Split into statements at ';' outside braces.
    let mut statements: Vec<Vec<String>> = Vec::new();
    let mut current = Vec::new();
    let mut depth = 0;
    for t in tokens {
        match t.as_str() {
            "{" => depth += 1,
            "}" => depth -= 1,
            ";" if depth == 0 => {
                statements.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(t);
    }
    assert!(current.is_empty(), "declarations after the last ';': {:?}", current);

    // Callback typedef names first: parameters of those types are nullable
    // function pointers (Option<...> in Rust).
    let mut callback_names = BTreeSet::new();
    for s in &statements {
        if s[0] == "typedef"
            && s.len() > 4
            && s.iter().any(|t| t == "(")
            && s[s.iter().position(|t| t == "(").unwrap() + 1] == "*"
        {
            callback_names.insert(s[s.iter().position(|t| t == "(").unwrap() + 2].clone());
        }
    }

    for s in statements {
        if s[0] == "typedef" {
            if s[1] == "struct" && s.len() == 4 {
                assert_eq!(s[2], s[3], "typedef struct names differ");
                header.opaque.insert(s[2].clone());
            } else if s[1] == "struct" && s[3] == "{" {
                let close = matching(&s, 3);
                let name = s[2].clone();
                assert_eq!(s.get(close + 1), Some(&name), "typedef struct {} names differ", name);
                let mut fields = Vec::new();
                for field in s[4..close].split(|t| t == ";").filter(|f| !f.is_empty()) {
                    fields.push(declarator(field, &callback_names));
                }
                header.structs.insert(name, fields);
            } else if let Some(open) = s.iter().position(|t| t == "(") {
                assert_eq!(s[open + 1], "*", "typedef {:?}: not a function pointer", s);
                let name = s[open + 2].clone();
                assert_eq!(s[open + 3], ")");
                let popen = open + 4;
                let pclose = matching(&s, popen);
                header.callbacks.insert(
                    name.clone(),
                    CFunction {
                        name,
                        params: params(&s[popen + 1..pclose], &callback_names),
                        ret: rust_type(&s[1..open], false, &callback_names, true),
                    },
                );
            } else {
                panic!("unknown typedef {:?}: update this parser", s);
            }
        } else {
            let open = s.iter().position(|t| t == "(").unwrap_or_else(|| panic!("not a prototype: {:?}", s));
            let close = matching(&s, open);
            assert_eq!(close, s.len() - 1, "unexpected tokens after {:?}", s);
            let name = s[open - 1].clone();
            header.functions.insert(
                name.clone(),
                CFunction {
                    name,
                    params: params(&s[open + 1..close], &callback_names),
                    ret: rust_type(&s[..open - 1], false, &callback_names, true),
                },
            );
        }
    }
    header
}

/// Differences between a header function and a `sys` signature, as text.
fn compare_signature(what: &str, c: &CFunction, rust: &sys::Signature, rust_names: Option<&[&str]>) -> Vec<String> {
    let mut problems = Vec::new();
    if c.params.len() != rust.params.len() {
        problems.push(format!(
            "{} {}: {} parameters in masq.h, {} in sys",
            what,
            c.name,
            c.params.len(),
            rust.params.len()
        ));
        return problems;
    }
    for (i, (cp, rp)) in c.params.iter().zip(rust.params).enumerate() {
        if norm(rp) != cp.rust {
            problems.push(format!(
                "{} {} parameter {} ({}): masq.h wants {}, sys has {}",
                what,
                c.name,
                i,
                cp.name,
                cp.rust,
                norm(rp)
            ));
        }
    }
    if let Some(names) = rust_names {
        for (cp, rn) in c.params.iter().zip(names) {
            if rn.trim_end_matches('_') != cp.name {
                problems.push(format!("{} {}: parameter {} is called {} in sys", what, c.name, cp.name, rn));
            }
        }
    }
    if norm(rust.ret) != c.ret {
        problems.push(format!("{} {}: returns {} in masq.h, {} in sys", what, c.name, c.ret, norm(rust.ret)));
    }
    problems
}

fn compare_with_header(
    header: &Header,
    functions: &[sys::Signature],
    callbacks: &[sys::Signature],
    structs: &[sys::StructDecl],
) -> Vec<String> {
    let mut problems = Vec::new();

    let declared: BTreeSet<&str> = functions.iter().map(|f| f.name).collect();
    for name in header.functions.keys() {
        if !declared.contains(name.as_str()) {
            problems.push(format!("function {} is in masq.h but not declared in sys", name));
        }
    }
    for f in functions {
        match header.functions.get(f.name) {
            None => problems.push(format!("sys declares {}, which masq.h does not", f.name)),
            Some(c) => problems.extend(compare_signature("function", c, f, None)),
        }
    }

    let declared: BTreeSet<&str> = callbacks.iter().map(|f| f.name).collect();
    for name in header.callbacks.keys() {
        if !declared.contains(name.as_str()) {
            problems.push(format!("callback type {} is in masq.h but not in sys", name));
        }
    }
    for f in callbacks {
        match header.callbacks.get(f.name) {
            None => problems.push(format!("sys declares callback type {}, which masq.h does not", f.name)),
            Some(c) => problems.extend(compare_signature("callback", c, f, None)),
        }
    }

    let declared: BTreeSet<&str> = structs.iter().map(|s| s.name).collect();
    for name in header.structs.keys() {
        if !declared.contains(name.as_str()) {
            problems.push(format!("struct {} is in masq.h but not in sys", name));
        }
    }
    for s in structs {
        match header.structs.get(s.name) {
            None => problems.push(format!("sys declares struct {}, which masq.h does not", s.name)),
            Some(fields) => {
                let c: Vec<(String, String)> = fields.iter().map(|f| (f.name.clone(), f.rust.clone())).collect();
                let r: Vec<(String, String)> = s.fields.iter().map(|(n, t)| (n.to_string(), norm(t))).collect();
                if c != r {
                    problems.push(format!("struct {}: masq.h has {:?}, sys has {:?}", s.name, c, r));
                }
            }
        }
    }
    problems
}

/// Parameter names as `sys` spells them, from its source (`stringify!` of
/// a type does not carry them): `name: type` pairs of each `pub fn`.
fn sys_param_names() -> BTreeMap<String, Vec<String>> {
    let source = include_str!("../src/sys.rs");
    let mut names = BTreeMap::new();
    let tokens: Vec<&str> = source.split("pub fn ").skip(1).collect();
    for chunk in tokens {
        let name = chunk.split('(').next().unwrap().trim().to_string();
        if !name.starts_with("masq_") {
            continue;
        }
        let args = &chunk[chunk.find('(').unwrap() + 1..];
        let mut depth = 1;
        let mut end = 0;
        for (i, c) in args.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let params: Vec<String> = args[..end]
            .split(',')
            .filter_map(|p| p.split(':').next())
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        names.insert(name, params);
    }
    names
}

#[test]
fn sys_matches_the_parsed_header() {
    let header = parse_header(&header_text());
    assert!(header.functions.len() >= 70, "the parser found only {} functions", header.functions.len());

    let mut problems = compare_with_header(&header, sys::FUNCTIONS, sys::CALLBACKS, sys::STRUCTS);

    // Parameter names too (a swapped pair of same-typed parameters shows here).
    let names = sys_param_names();
    for f in sys::FUNCTIONS {
        let c = &header.functions[f.name];
        let rust_names: Vec<&str> = names[f.name].iter().map(String::as_str).collect();
        problems.extend(
            compare_signature("function", c, f, Some(&rust_names)).into_iter().filter(|p| p.contains("is called")),
        );
    }

    let opaque: BTreeSet<String> = sys::OPAQUE.iter().map(|s| s.to_string()).collect();
    if opaque != header.opaque {
        problems.push(format!("opaque handles: masq.h {:?}, sys {:?}", header.opaque, opaque));
    }

    let constants: BTreeMap<String, i128> = sys::CONSTANTS.iter().map(|(n, v)| (n.to_string(), *v)).collect();
    if constants != header.int_constants {
        for (name, value) in &header.int_constants {
            match constants.get(name) {
                None => problems.push(format!("#define {} {} is not in sys", name, value)),
                Some(v) if v != value => problems.push(format!("{} is {} in masq.h, {} in sys", name, value, v)),
                _ => {}
            }
        }
        for name in constants.keys().filter(|n| !header.int_constants.contains_key(*n)) {
            problems.push(format!("sys has constant {}, which masq.h does not define", name));
        }
    }
    assert_eq!(header.string_constants.get("MASQ_VERSION_STRING").map(String::as_str), Some(sys::MASQ_VERSION_STRING));

    assert!(problems.is_empty(), "sys differs from masq.h:\n  {}", problems.join("\n  "));
}

#[test]
fn the_parser_comparison_catches_a_drift() {
    let header = parse_header(&header_text());
    // masq_put with a 32-bit key length, and masq_get's value_out losing a level of indirection.
    let mut functions: Vec<sys::Signature> = sys::FUNCTIONS.to_vec();
    for f in functions.iter_mut() {
        if f.name == "masq_put" {
            f.params = &["*mut masq_store", "*const c_char", "*const u8", "u32", "*const u8", "usize"];
        }
        if f.name == "masq_get" {
            f.params = &["*mut masq_store", "*const c_char", "*const u8", "usize", "*mut u8", "*mut usize"];
        }
    }
    let mut structs: Vec<sys::StructDecl> = sys::STRUCTS.to_vec();
    structs[0].fields = &[("key", "*const u8"), ("value", "*const u8"), ("key_len", "usize"), ("value_len", "usize")];
    let problems = compare_with_header(&header, &functions, sys::CALLBACKS, &structs);
    assert!(problems.iter().any(|p| p.contains("masq_put") && p.contains("usize")), "{:?}", problems);
    assert!(problems.iter().any(|p| p.contains("masq_get") && p.contains("*mut*mutu8")), "{:?}", problems);
    assert!(problems.iter().any(|p| p.contains("struct masq_entry")), "{:?}", problems);
}

#[test]
fn the_parser_reads_what_it_should() {
    let header = parse_header(&header_text());
    let put = &header.functions["masq_put"];
    let types: Vec<&str> = put.params.iter().map(|p| p.rust.as_str()).collect();
    assert_eq!(types, ["*mutmasq_store", "*constc_char", "*constu8", "usize", "*constu8", "usize"]);
    assert_eq!(header.functions["masq_get"].params[4].rust, "*mut*mutu8");
    assert_eq!(header.functions["masq_crypto_x25519"].params[0].rust, "*constu8"); // const uint8_t x[32]
    assert_eq!(header.functions["masq_session_peer_key"].params[1].rust, "*mutu8"); // uint8_t key_out[32]
    assert_eq!(header.functions["masq_watch"].params[4].rust, "Option<masq_watch_fn>");
    assert_eq!(header.functions["masq_free"].ret, "()");
    assert_eq!(header.functions["masq_version"].ret, "*constc_char");
    assert_eq!(header.callbacks["masq_list_fn"].ret, "c_int");
    assert_eq!(header.structs["masq_change"].len(), 13);
    assert_eq!(header.int_constants["MASQ_LIST_KEYS_ONLY"], 1);
    assert!(header.opaque.contains("masq_session"));
}

// ---- 2. a C program compiled against the header ------------------------------------------------

/// C spelling of a `sys` type (east const: `uint8_t const *`).
fn c_type(rust: &str) -> String {
    let t = norm(rust);
    if let Some(rest) = t.strip_prefix("*const") {
        return format!("{} const *", c_type(rest));
    }
    if let Some(rest) = t.strip_prefix("*mut") {
        return format!("{} *", c_type(rest));
    }
    if let Some(inner) = t.strip_prefix("Option<").and_then(|r| r.strip_suffix('>')) {
        return inner.to_string();
    }
    match t.as_str() {
        "()" => "void".into(),
        "c_void" => "void".into(),
        "c_int" => "int".into(),
        "c_char" => "char".into(),
        "u8" => "uint8_t".into(),
        "u32" => "uint32_t".into(),
        "u64" => "uint64_t".into(),
        "i64" => "int64_t".into(),
        "i32" => "int32_t".into(),
        "u16" => "uint16_t".into(),
        "usize" => "size_t".into(),
        "f64" => "double".into(),
        name if name.starts_with("masq_") => name.into(),
        other => panic!("no C spelling for {}", other),
    }
}

fn fn_pointer_type(f: &sys::Signature) -> String {
    let params: Vec<String> = f.params.iter().map(|p| c_type(p)).collect();
    format!("{} (*)({})", c_type(f.ret), if params.is_empty() { "void".to_string() } else { params.join(", ") })
}

fn c_program(functions: &[sys::Signature], callbacks: &[sys::Signature], structs: &[sys::StructDecl]) -> String {
    let mut c = String::from(
        "#include <stddef.h>\n#include <stdio.h>\n#include \"masq.h\"\n#include \"masq_crypto.h\"\n\
         #define SAME(a, b, what) _Static_assert(__builtin_types_compatible_p(a, b), what)\n\n",
    );
    for f in functions {
        c.push_str(&format!("SAME(__typeof__(&{}), {}, \"function {}\");\n", f.name, fn_pointer_type(f), f.name));
    }
    for f in callbacks {
        c.push_str(&format!("SAME({}, {}, \"callback {}\");\n", f.name, fn_pointer_type(f), f.name));
    }
    for s in structs {
        for (field, t) in s.fields {
            c.push_str(&format!(
                "SAME(__typeof__((({} *)0)->{}), {}, \"member {}.{}\");\n",
                s.name,
                field,
                c_type(t),
                s.name,
                field
            ));
        }
    }
    for (name, value) in sys::CONSTANTS {
        // Beyond long long, an unsuffixed decimal literal is not portable C.
        let suffix = if *value > i64::MAX as i128 { "ull" } else { "" };
        c.push_str(&format!("_Static_assert({} == {}{}, \"constant {}\");\n", name, value, suffix, name));
    }
    c.push_str("\nint main(void) {\n");
    for s in structs {
        c.push_str(&format!(
            "    printf(\"{0} size %zu align %zu\\n\", sizeof({0}), (size_t)_Alignof({0}));\n",
            s.name
        ));
        for (field, _) in s.fields {
            c.push_str(&format!("    printf(\"{0} {1} %zu\\n\", offsetof({0}, {1}));\n", s.name, field));
        }
    }
    c.push_str("    printf(\"version %s\\n\", MASQ_VERSION_STRING);\n    return 0;\n}\n");
    c
}

struct Compiled {
    ok: bool,
    diagnostics: String,
    exe: PathBuf,
}

fn compile(name: &str, source: &str) -> Compiled {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("header-check");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join(format!("{}.c", name));
    let exe = dir.join(name);
    std::fs::write(&src, source).unwrap();
    let include = header_path().parent().unwrap().to_path_buf();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let output = Command::new(&cc)
        .args(["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(&include)
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{}` (set CC): {}", cc, e));
    Compiled { ok: output.status.success(), diagnostics: String::from_utf8_lossy(&output.stderr).into_owned(), exe }
}

#[test]
fn sys_matches_the_header_compiled_by_cc() {
    let program = c_program(sys::FUNCTIONS, sys::CALLBACKS, sys::STRUCTS);
    let compiled = compile("sys_check", &program);
    assert!(compiled.ok, "sys differs from masq.h as the C compiler sees it:\n{}", compiled.diagnostics);

    let output = Command::new(&compiled.exe).output().expect("run the layout program");
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let mut c_layout: BTreeMap<(String, String), usize> = BTreeMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["version", v] => assert_eq!(*v, masq::HEADER_VERSION),
            [s, "size", size, "align", align] => {
                c_layout.insert((s.to_string(), "size".into()), size.parse().unwrap());
                c_layout.insert((s.to_string(), "align".into()), align.parse().unwrap());
            }
            [s, field, offset] => {
                c_layout.insert((s.to_string(), field.to_string()), offset.parse().unwrap());
            }
            _ => panic!("unexpected line {:?}", line),
        }
    }

    let mut problems = Vec::new();
    let mut compared = 0;
    for layout in sys::struct_layouts() {
        let mut check = |what: &str, rust: usize| {
            compared += 1;
            match c_layout.get(&(layout.name.to_string(), what.to_string())) {
                Some(&c) if c == rust => {}
                other => problems.push(format!("{} {}: C {:?}, Rust {}", layout.name, what, other, rust)),
            }
        };
        check("size", layout.size);
        check("align", layout.align);
        for (field, offset) in &layout.offsets {
            check(field, *offset);
        }
    }
    assert!(problems.is_empty(), "struct layouts differ:\n  {}", problems.join("\n  "));
    assert_eq!(compared, c_layout.len(), "every struct member the C program printed was compared");
}

#[test]
fn the_compiled_check_catches_a_drift() {
    // A wrong width, a missing const and a wrong member type must not compile.
    let mut functions: Vec<sys::Signature> = sys::FUNCTIONS.iter().copied().filter(|f| f.name == "masq_put").collect();
    functions[0].params = &["*mut masq_store", "*const c_char", "*const u8", "u32", "*const u8", "usize"];
    let compiled = compile("drift_width", &c_program(&functions, &[], &[]));
    assert!(!compiled.ok && compiled.diagnostics.contains("function masq_put"), "{}", compiled.diagnostics);

    let mut callbacks: Vec<sys::Signature> =
        sys::CALLBACKS.iter().copied().filter(|f| f.name == "masq_log_fn").collect();
    callbacks[0].params = &["*mut c_void", "c_int", "*mut c_char", "*const c_char"];
    let compiled = compile("drift_const", &c_program(&[], &callbacks, &[]));
    assert!(!compiled.ok && compiled.diagnostics.contains("callback masq_log_fn"), "{}", compiled.diagnostics);

    let structs = [sys::StructDecl { name: "masq_change", fields: &[("timestamp", "u32")] }];
    let compiled = compile("drift_member", &c_program(&[], &[], &structs));
    assert!(!compiled.ok && compiled.diagnostics.contains("member masq_change.timestamp"), "{}", compiled.diagnostics);
}

extern "C" {
    fn dlsym(handle: *mut std::os::raw::c_void, symbol: *const std::os::raw::c_char) -> *mut std::os::raw::c_void;
}

#[test]
fn library_exports_what_sys_declares() {
    // The loaded library is the version the header names, and exports every
    // function the header (hence sys) declares: looked up at run time, so a
    // missing one is reported by name instead of failing to link.
    assert_eq!(masq::version(), sys::MASQ_VERSION_STRING);
    assert_eq!(masq::version_number(), sys::MASQ_VERSION_NUMBER);
    let missing: Vec<&str> = sys::FUNCTIONS
        .iter()
        .map(|f| f.name)
        .filter(|name| {
            let c = std::ffi::CString::new(*name).unwrap();
            // SAFETY: RTLD_DEFAULT (NULL on glibc) searches the loaded objects, libmasq.so included.
            unsafe { dlsym(std::ptr::null_mut(), c.as_ptr()) }.is_null()
        })
        .collect();
    assert!(missing.is_empty(), "libmasq.so does not export what masq.h declares: {:?}", missing);
}
