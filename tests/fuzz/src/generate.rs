//! Well-formed inputs from the grammar: expressions over the sample batch's columns (with
//! literals of every kind, functions, arithmetic, casts, deep nesting and, now and then,
//! chains past the language's limits) and whole jobs assembled from step fragments, with
//! variables. Mutation starts
//! from these as well as from the seed corpus.

use arrow::datatypes::{DataType, SchemaRef};

/// Tokens the mutator inserts into filter expressions.
pub const FILTER_TOKENS: [&[u8]; 43] = [
    b" like '%_",
    b" escape '",
    b" ilike ",
    b"abs(",
    b"cast(",
    b" as bigint)",
    b"::tinyint",
    b"case when ",
    b" then ",
    b" else ",
    b" end",
    b" // ",
    b" % ",
    b" || ",
    b"date_trunc('week', ",
    b" and ",
    b" or ",
    b"not ",
    b" is null",
    b" is not null",
    b" in (",
    b" not in (",
    b"(",
    b")",
    b"=",
    b"!=",
    b"<>",
    b"<=",
    b">=",
    b"'",
    b"''",
    b"\"",
    b"--",
    b"/*",
    b"*/",
    b"1e308",
    b"-9223372036854775808",
    b"NaN",
    b"null",
    b"true",
    b"'2024-01-31'",
    b"ts",
    b"age",
];

/// Tokens the mutator inserts into jobs.
pub const JOB_TOKENS: [&[u8]; 26] = [
    b"{{ds}}",
    b"{{run_id}}",
    b"{{v}}",
    b"{{",
    b"}}",
    b"\"\"\"",
    b"'''",
    b"[[step]]\n",
    b"[sink]\n",
    b"[source]\n",
    b"op = \"filter\"\n",
    b"op = \"cast\"\n",
    b"columns = [\"*\"]\n",
    b"columns = { age = \"float64\" }\n",
    b"= ",
    b"\\u0000",
    b"\\",
    b"\n",
    b"#",
    b"inf",
    b"nan",
    b"-0",
    b"9223372036854775808",
    b"on_error = \"null\"\n",
    b"on_error = \"reject\"\n",
    b"rejects = \"out/rejects\"\n",
];

const COMPARISONS: [&str; 8] = ["=", "==", "!=", "<>", "<", "<=", ">", ">="];

const LITERALS: [&str; 24] = [
    "0",
    "-0",
    "1",
    "-1",
    "42",
    "2.5",
    "-2.25",
    "1e6",
    "1e308",
    "1e400",
    "99999999999999999999",
    "-9223372036854775808",
    "'DE'",
    "''",
    "'it''s'",
    "'2024-01-31'",
    "'2024-01-31 12:00:00'",
    "'2024-01-31T12:00:00+02:00'",
    "'nan'",
    "'x'",
    "true",
    "false",
    "null",
    "0.1",
];

/// A random filter expression over `schema`'s columns.
pub fn filter_expr(rng: &mut fastrand::Rng, schema: &SchemaRef) -> String {
    let columns: Vec<(String, DataType)> =
        schema.fields().iter().map(|field| (field.name().clone(), field.data_type().clone())).collect();
    match rng.u8(..100) {
        // A chain around the limit on boolean operators (1,000).
        0 => {
            let terms = rng.usize(900..1100);
            (0..terms).map(|i| format!("id = {i}")).collect::<Vec<_>>().join(if rng.bool() { " or " } else { " and " })
        }
        // A chain of any other operator around its limit (1,000): each nests the tree a level.
        2 => {
            const CHAINED: [&str; 16] =
                ["+", "-", "*", "/", "%", "||", "=", "!=", "<", ">=", "is not null", "is null", "^", "&", "|", "->"];
            let operator = CHAINED[rng.usize(..CHAINED.len())];
            let terms = rng.usize(900..3000);
            format!("id {}> 1", format!("{operator} id ").repeat(terms))
        }
        // Deep nesting.
        1 => {
            let depth = rng.usize(10..3000);
            let (open, close) = if rng.bool() { ("(", ")") } else { ("not (", ")") };
            format!("{}id > 3{}", open.repeat(depth), close.repeat(depth))
        }
        _ => {
            let depth = rng.usize(..6);
            expr(rng, &columns, depth)
        }
    }
}

fn expr(rng: &mut fastrand::Rng, columns: &[(String, DataType)], depth: usize) -> String {
    if depth == 0 || rng.u8(..10) < 3 {
        return atom(rng, columns);
    }
    match rng.u8(..4) {
        0 => {
            let joiner = if rng.bool() { " and " } else { " or " };
            (0..rng.usize(2..5)).map(|_| expr(rng, columns, depth - 1)).collect::<Vec<_>>().join(joiner)
        }
        1 => format!("not {}", expr(rng, columns, depth - 1)),
        _ => format!("({})", expr(rng, columns, depth - 1)),
    }
}

/// Literals that fit a column of `data_type` (any literal, one time in six).
fn literals_for(rng: &mut fastrand::Rng, data_type: &DataType) -> &'static [&'static str] {
    if rng.u8(..6) == 0 {
        return &LITERALS;
    }
    match data_type {
        DataType::Utf8 | DataType::Dictionary(..) => &["'DE'", "''", "'it''s'", "'x'", "'34'", "'red'"],
        DataType::Boolean => &["true", "false"],
        DataType::Timestamp(..) | DataType::Date32 => {
            &["'2024-01-31'", "'2024-01-02 12:00:00'", "'2024-01-31T12:00:00+02:00'", "'1970-01-01'"]
        }
        _ => &[
            "0",
            "-0",
            "1",
            "-1",
            "42",
            "2.5",
            "1e308",
            "1e400",
            "99999999999999999999",
            "-9223372036854775808",
            "0.1",
        ],
    }
}

fn atom(rng: &mut fastrand::Rng, columns: &[(String, DataType)]) -> String {
    let (name, data_type) = columns[rng.usize(..columns.len())].clone();
    let name = if rng.u8(..30) == 0 { "\"no such\"".to_string() } else { name };
    let literal = |rng: &mut fastrand::Rng| {
        let choices = literals_for(rng, &data_type);
        choices[rng.usize(..choices.len())].to_string()
    };
    let op = COMPARISONS[rng.usize(..COMPARISONS.len())];
    match rng.u8(..7) {
        0 => format!("{name} {op} {}", literal(rng)),
        1 => format!("{} {op} {name}", literal(rng)),
        2 => {
            let same: Vec<&(String, DataType)> = columns.iter().filter(|(_, other)| other == &data_type).collect();
            format!("{name} {op} {}", same[rng.usize(..same.len())].0)
        }
        3 => {
            let items = (0..rng.usize(1..6)).map(|_| literal(rng)).collect::<Vec<_>>().join(", ");
            format!("{name} {}in ({items})", if rng.bool() { "not " } else { "" })
        }
        4 => format!("{name} is {}null", if rng.bool() { "not " } else { "" }),
        5 if rng.bool() => format!(
            "{name} {}like '{}'",
            if rng.bool() { "not " } else { "i" },
            ["%a%", "_", "%!_%' escape '!", "\\%"][rng.usize(..4)]
        ),
        5 => "active".to_string(),
        6 => format!("{} {op} {}", value(rng, &name, columns), literal(rng)),
        _ => format!("{name} {op} {}", literal(rng)),
    }
}

/// A value computed from the column `name` (of any type: most do not type-check, and are
/// refused at bind time; those that do run on every kind of value).
fn value(rng: &mut fastrand::Rng, name: &str, columns: &[(String, DataType)]) -> String {
    let other = &columns[rng.usize(..columns.len())].0;
    const FUNCTIONS: [&str; 16] = [
        "abs", "sqrt", "ln", "exp", "round", "floor", "sign", "lower", "upper", "trim", "length", "cbrt", "log10",
        "ceil", "log2", "-",
    ];
    match rng.u8(..13) {
        0 => format!("{}({name})", FUNCTIONS[rng.usize(..FUNCTIONS.len())]),
        1 => format!("{name} {} {other}", ["+", "-", "*", "/", "//", "%", "||"][rng.usize(..7)]),
        2 => {
            format!("cast({name} as {})", ["bigint", "tinyint", "double", "varchar", "date", "boolean"][rng.usize(..6)])
        }
        3 => format!("case when {name} > 0 then {name} else {other} end"),
        4 => format!("coalesce({name}, {other}, 0)"),
        5 => format!("extract({} from {name})", ["hour", "dow", "epoch", "year", "week"][rng.usize(..5)]),
        6 => format!("date_trunc('{}', {name})", ["month", "week", "hour"][rng.usize(..3)]),
        7 => format!("substr({name}, {}, {})", rng.i8(-3..4), rng.i8(-3..4)),
        8 => format!("greatest({name}, {other})"),
        9 => format!("round({name}, {})", rng.i8(-20..20)),
        10 => format!("date_diff('{}', {name}, {other})", ["day", "month", "second"][rng.usize(..3)]),
        11 => format!("left({name}, {}) || right({other}, -1)", rng.i8(-3..4)),
        _ => format!("nullif({name}, {other})"),
    }
}

/// A random job over `schema`: variables, a source, up to six steps and a sink.
pub fn job(rng: &mut fastrand::Rng, schema: &SchemaRef) -> String {
    let columns: Vec<String> = schema.fields().iter().map(|field| field.name().clone()).collect();
    let typed: Vec<(String, DataType)> =
        schema.fields().iter().map(|field| (field.name().clone(), field.data_type().clone())).collect();
    let numeric = ["income", "f_0", "f_1", "f_2", "f_3", "n8", "u64", "amount"];
    let strings = ["age", "tenure_months", "country", "email"];
    let pick = |rng: &mut fastrand::Rng, from: &[&str]| from[rng.usize(..from.len())].to_string();
    let some = |rng: &mut fastrand::Rng, from: &[&str]| {
        let count = rng.usize(1..=from.len().min(3));
        let names: Vec<String> = (0..count).map(|_| format!("\"{}\"", pick(rng, from))).collect();
        format!("[{}]", names.join(", "))
    };
    let mut text = String::new();
    if rng.bool() {
        text.push_str(&format!(
            "v={}\nds=2024-0{}-1{}\n---\n",
            pick(rng, &["a", "", "x\"y", "{{ds}}", "[b]"]),
            rng.u8(1..10),
            rng.u8(..10)
        ));
    }
    text.push_str("name = \"fuzz\"\n[source]\nuri = \"in/date={{ds}}/\"\n");
    for _ in 0..rng.usize(..7) {
        text.push_str("[[step]]\n");
        let step = match rng.u8(..25) {
            24 => format!(
                "op = \"aggregate\"\nby = {}\naggs = {{ a = \"{}\", b = \"{}\" }}\n{}",
                pick(rng, &["[]", "[\"country\"]", "[\"country\", \"n8\"]", "[\"email\"]", "[\"n8\", \"day\"]"]),
                pick(
                    rng,
                    &["count(*)", "sum(n8)", "avg(income)", "min(country)", "count(distinct n8)", "stddev_samp(f_0)"]
                ),
                pick(
                    rng,
                    &[
                        "max(day)",
                        "last(amount order by age desc nulls first)",
                        "first(country)",
                        "var_pop(u64)",
                        "sum(u64)",
                        "sum(age)"
                    ]
                ),
                pick(rng, &["", "", "having = \"a > 1\"\n", "having = \"b is not null\"\n", "having = \"a\"\n"])
            ),
            23 => format!(
                "op = \"join\"\nwith = \"{}\"\n{}\nhow = \"{}\"\nvalidate = \"{}\"\nsuffix = \"{}\"\n",
                pick(rng, &["c", "c", "nope"]),
                pick(
                    rng,
                    &[
                        "on = [\"country\"]",
                        "on = [\"n8\", \"country\"]",
                        "left_on = [\"n8\"]\nright_on = [\"u64\"]",
                        "left_on = [\"f_0\"]\nright_on = [\"n8\"]",
                        "left_on = [\"age\"]\nright_on = [\"income\"]",
                        "on = []",
                    ]
                ),
                pick(rng, &["inner", "left", "semi", "anti"]),
                pick(rng, &["many_to_one", "one_to_one"]),
                pick(rng, &["_right", "", "_x"])
            ),
            22 => format!(
                "op = \"onehot\"\ncolumns = {}\nhandle_unknown = \"{}\"\ndrop = \"{}\"\nmin_frequency = {}\nmax_categories = {}\n{}",
                some(rng, &[&strings[..], &numeric[..]].concat()),
                pick(rng, &["error", "ignore", "infrequent_if_exist", "warn"]),
                pick(rng, &["first", "if_binary", "none"]),
                pick(rng, &["1", "3", "0", "0.2", "1.5"]),
                pick(rng, &["1", "2", "40", "0"]),
                pick(rng, &["", "categories = { country = [\"US\", \"\"] }\n", "categories = { n8 = [1, 1] }\n"])
            ),
            21 => format!(
                "op = \"ordinal\"\ncolumns = {}\nmin_frequency = {}\nmax_categories = {}\nunknown_value = {}\nencoded_missing_value = {}\n",
                some(rng, &[&strings[..], &numeric[..]].concat()),
                pick(rng, &["1", "3", "0", "0.2", "1.5", "-1"]),
                pick(rng, &["1", "2", "40", "0"]),
                pick(rng, &["-1", "0", "2", "1.5", "nan"]),
                pick(rng, &["-2", "1", "-1e300", "inf"])
            ),
            20 => format!(
                "op = \"power\"\ncolumns = {}\nstandardize = {}\nmethod = \"{}\"\n",
                some(rng, &numeric),
                rng.bool(),
                pick(rng, &["yeo-johnson", "box-cox"])
            ),
            19 => format!(
                "op = \"bucketize\"\ncolumns = {}\nn_bins = {}\nstrategy = \"{}\"\nexact = {}\nencode = \"{}\"\n",
                some(rng, &numeric),
                pick(rng, &["1", "2", "5", "10001"]),
                pick(rng, &["quantile", "uniform", "kmeans"]),
                rng.bool(),
                pick(rng, &["ordinal", "onehot", "onehot-dense"])
            ),
            18 => format!(
                "op = \"hash_encode\"\ncolumns = {}\nn_features = {}\nkeep_inputs = {}\n",
                some(rng, &[&strings[..], &numeric[..], &["ts"]].concat()),
                pick(rng, &["1", "7", "64", "0", "70000"]),
                rng.bool()
            ),
            16 => format!(
                "op = \"robust_scale\"\ncolumns = {}\nquantile_range = [{}.0, {}.0]\nexact = {}\n",
                some(rng, &numeric),
                rng.u8(..60),
                rng.u8(40..=100),
                rng.bool()
            ),
            17 => format!(
                "op = \"normalize\"\ncolumns = {}\nnorm = \"{}\"\n",
                some(rng, &numeric),
                pick(rng, &["l1", "l2", "max", "l3"])
            ),
            15 => {
                let column = pick(rng, &columns.iter().map(String::as_str).collect::<Vec<_>>());
                format!(
                    "op = \"derive\"\ncolumns = {{ {} = \"{}\", z = \"{}\" }}\n",
                    pick(rng, &[&strings[..], &numeric[..], &["new"]].concat()),
                    value(rng, &column, &typed).replace('"', "\\\""),
                    filter_expr(rng, schema).replace('\\', "\\\\").replace('"', "\\\"")
                )
            }
            0 => format!(
                "op = \"select\"\ncolumns = {}\n",
                some(rng, &columns.iter().map(String::as_str).collect::<Vec<_>>())
            ),
            1 => format!("op = \"drop\"\ncolumns = {}\n", some(rng, &["email", "tag", "f_*", "day"])),
            2 => format!("op = \"rename\"\ncolumns = {{ {} = \"renamed_{{{{v}}}}\" }}\n", pick(rng, &strings)),
            3 => {
                let to = pick(
                    rng,
                    &["float64", "float32", "int32", "int8", "uint64", "string", "date", "timestamp[s]", "bool"],
                );
                let on_error = pick(rng, &["fail", "null", "reject"]);
                format!(
                    "op = \"cast\"\ncolumns = {{ {} = \"{to}\" }}\non_error = \"{on_error}\"\n",
                    pick(rng, &[&strings[..], &numeric[..], &["ts", "day"]].concat())
                )
            }
            4 => format!(
                "op = \"filter\"\nexpr = \"{}\"\n",
                filter_expr(rng, schema).replace('\\', "\\\\").replace('"', "\\\"")
            ),
            5 => format!(
                "op = \"drop_nulls\"\ncolumns = {}\n",
                some(rng, &columns.iter().map(String::as_str).collect::<Vec<_>>())
            ),
            6 => format!(
                "op = \"impute\"\ncolumns = {}\nstrategy = \"{}\"\n",
                some(rng, &numeric),
                pick(rng, &["mean", "median", "most_frequent"])
            ),
            7 => format!("op = \"impute\"\ncolumns = {}\nstrategy = \"most_frequent\"\n", some(rng, &strings)),
            8 => format!("op = \"standardize\"\ncolumns = {}\n", some(rng, &numeric)),
            9 => format!(
                "op = \"minmax\"\ncolumns = {}\nrange = [{}, 1.0]\n",
                some(rng, &numeric),
                pick(rng, &["-1.0", "0.0", "1.0"])
            ),
            10 => format!("op = \"clip\"\ncolumns = {}\nquantiles = [0.{}, 0.9]\n", some(rng, &numeric), rng.u8(..9)),
            11 => format!(
                "op = \"mask\"\ncolumns = {}\nmethod = \"{}\"\nkey_env = \"PATH\"\n",
                some(rng, &strings),
                pick(rng, &["hmac", "redact"])
            ),
            12 => format!(
                "op = \"pca\"\ncolumns = [\"f_*\"]\ncomponents = {}\n",
                pick(rng, &["1", "2", "4", "0.5", "0.99"])
            ),
            13 => format!(
                "op = \"check\"\non_fail = \"{}\"\nnot_null = {}\nunique = {}\nrange = {{ {} = {{ min = -1, max = {} }} }}\nrow_count = {{ min = {} }}\nexpression = \"{}\"\n",
                pick(rng, &["fail", "warn", "reject"]),
                some(rng, &columns.iter().map(String::as_str).collect::<Vec<_>>()),
                some(rng, &strings),
                pick(rng, &numeric),
                rng.u8(..100),
                rng.u8(..4),
                filter_expr(rng, schema).replace('\\', "\\\\").replace('"', "\\\"")
            ),
            _ => format!("op = \"dedupe\"\ncolumns = {}\n", some(rng, &strings)),
        };
        text.push_str(&step);
    }
    text.push_str("[sink]\nuri = \"out/{{ds}}/{{run_id}}\"\n");
    if rng.bool() {
        text.push_str("mode = \"overwrite\"\n");
    }
    if rng.bool() {
        text.push_str("rejects = \"out/rejects/{{ds}}\"\n");
    }
    text
}
