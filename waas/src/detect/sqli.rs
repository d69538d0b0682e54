//! SQL injection patterns (SQL view: lowercased, comments removed, whitespace collapsed).
//! libinjection (`sqli-100`) runs first; these catch what its fingerprints miss.

use super::PatternRule;

/// Description of the libinjection rule.
pub(crate) const LIBINJECTION: &str = "SQL injection (libinjection fingerprint)";

/// `(id, description, pattern)`.
pub(crate) const RULES: &[PatternRule] = &[
    (
        "sqli-110",
        "boolean tautology or comparison after a quote or number",
        r#"(?:['"`)]|\d)\s*(?:or|and|xor|\|\||&&|div|not|mod)\b\s*(?:not\s+)?[('"`]*\s*[\w@.'"`-]*\s*[)'"`]*\s*(?:=|<=>|<>|!=|>=|<=|<|>|\blike\b|\bilike\b|\bglob\b|\brlike\b|\bregexp\b|\bsounds\s+like\b|\bis\b|\bbetween\b|\bin\s*\()"#,
    ),
    (
        "sqli-111",
        "quote followed by a boolean operator and a value",
        r#"['"`]\s*(?:or|and|xor|\|\||&&)\s*['"`(]?\s*(?:\d|true|false|null|'|"|not\b|exists\b|\()"#,
    ),
    (
        "sqli-112",
        "numeric tautology",
        r"\b(?:or|and|xor)\s+\(?\s*\d+\s*(?:=|<>|!=|<|>|<=|>=|like)\s*\d+|\b\d+\s*(?:!=|<>|<=>|\blike\b|\bglob\b)\s*\d+\b|\blike\s+null\b|\bor\s+\d+\s*(?:#|--|/\*)",
    ),
    (
        "sqli-113",
        "value opening with a boolean operator and a comparison",
        r#"(?:^|=)\s*(?:and|or|xor|div|\|\||&&)\s+[\w@'"(`.-]+\s*(?:[=<>!]|\bis\b|\blike\b|\brlike\b|\bregexp\b|\bin\s*\(|\()|(?:^|=)\s*(?:\|\||&&)\s*\("#,
    ),
    (
        "sqli-114",
        "NoSQL (MongoDB) query operator",
        r"(?:\[|^|\x22)\$(?:ne|eq|gt|gte|lt|lte|in|nin|regex|where|exists|not|nor|or|and|expr|elemmatch|size|all|type|mod|text|function|accumulator|lookup)\b",
    ),
    (
        "sqli-115",
        "quote then an SQL statement keyword, or a bare boolean probe",
        r#"^\s*['"`]\s*(?:union|alter|drop|truncate|exec|declare|shutdown)\b|^\s*['"`]?\s*(?:or|xor|and)\s+\w+\s*[!=<>-]|^\s*(?:or|xor)\s+\d+\s*$"#,
    ),
    (
        "sqli-120",
        "UNION SELECT",
        r"\bunion\b(?:\s|\(|all\b|distinct\b)*\s*\(?\s*select\b",
    ),
    (
        "sqli-121",
        "SELECT ... FROM with SQL syntax",
        r#"\bselect\b[\s(]+(?:[\w@.*,`'"()\s-]{1,120}?)\bfrom\b\s*[\w`"\[(.]+\s*(?:$|[;)#,'"`(]|--|\b(?:where|order|group|limit|union|join|inner|left|right|cross|natural|having|into|procedure|offset|as|with|for|lock|fetch|top|dual|and|or)\b)|\bselect\s+(?:\*|@@\w+|\d+\s*,|count\s*\(|null\b|case\b|if\s*\(|\(\s*select\b)"#,
    ),
    (
        "sqli-122",
        "data-modifying or schema statement",
        r"\b(?:insert\s+into|delete\s+from|update\s+[\w`.]+\s+set|drop\s+(?:table|database|schema|view|index|user|function|procedure)\s+(?:if\s+exists\s+)?[\w`.\[\]\x22]+\s*(?:$|[;#)'\x22]|--|\b(?:cascade|restrict|purge)\b)|alter\s+(?:table|database|user|system)|truncate\s+table|create\s+(?:table|database|user|function|procedure|trigger)|replace\s+into|merge\s+into|grant\s+\w+(?:\s*,\s*\w+)*\s+on\b|load\s+data\s+(?:local\s+)?infile|rename\s+table|shutdown\s+with\s+nowait)\b|\bvalues\s*\(\s*['\x22\d@]",
    ),
    (
        "sqli-123",
        "column alias then FROM, or qualified identifiers",
        r#"[)`"']\s*as\s+[\w`"']+\s+from\b|\d\s+as\s+["`]\w+["`]\s+from\b|`[\w$]+`\s*\.\s*`[\w$]+`|\bexec(?:ute)?\s*\(|\bselect\s*\(\s*(?:case|select|if)\b|\bexecute\s+immediate\b"#,
    ),
    (
        "sqli-130",
        "quote or parenthesis closed, then a comment or statement end",
        r#"['"]\s*(?:;|--|#|/\*|\{`)|\)\s*(?:--|#|/\*)|;\s*(?:--|#)|\bwhere\s+\S+\s*--"#,
    ),
    (
        "sqli-131",
        "stacked query",
        r";\s*(?:select|insert|update|delete|drop|alter|create|truncate|exec|execute|declare|shutdown|grant|revoke|waitfor|set\s+@|call|use|begin|commit|rollback|show|handler|load|copy)\b",
    ),
    (
        "sqli-140",
        "time-based blind injection",
        r"\b(?:sleep|benchmark|pg_sleep|pg_sleep_for|randomblob|dbms_lock\.sleep|dbms_pipe\.receive_message|get_lock|release_lock)\s*\(|\bwaitfor\s+(?:delay|time)\b",
    ),
    (
        "sqli-150",
        "database catalog, system object or dangerous procedure",
        r"\b(?:information_schema|sysobjects|syscolumns|sysusers|sysdatabases|sys\.(?:objects|tables|columns|databases|sql_logins|user_)|master\.\.|mysql\.(?:user|db)|pg_(?:catalog|shadow|user|database|tables|group|namespace|proc|read_file|ls_dir|stat)|sqlite_(?:master|schema|temp_master|version)|all_(?:tables|users|tab_columns|objects)|user_(?:tables|objects|tab_columns|users)|dba_users|xp_cmdshell|xp_reg\w+|xp_dirtree|sp_executesql|sp_oacreate|sp_password|sp_configure|openrowset|opendatasource|load_file|into\s+(?:out|dump)file|utl_(?:http|inaddr|file|smtp)|dbms_\w+|sysibm\.|msysaccessobjects|rdb\$\w+|lo_import|lo_export|dblink\w*|sys_eval|sys_exec|@@(?:version|datadir|hostname|basedir|servername|spid|identity|language)|current_database|tempdb|msdb|schema_name|table_schema|sysprocesses|sysfiles|pg_sleep)\b",
    ),
    (
        "sqli-160",
        "SQL function used on injected data",
        r#"\b(?:concat|concat_ws|group_concat|string_agg|listagg|char|chr|nchar|ascii|ord|hex|unhex|substring|substr|mid|left|right|cast|convert|extractvalue|updatexml|version|database|schema|user|current_user|system_user|session_user|md5|sha1|sha2|if|ifnull|isnull|nullif|coalesce|iif|elt|make_set|export_set|json_extract|json_keys|xmltype|to_char|to_number|unistr|instr|locate|position|length|len|count|floor|rand|row_count|name_const|exp|geometrycollection|multipoint|polygon|linestring|uuid|last_insert_id|found_rows|table_name|column_name)\s*\([^)]{0,100}\)\s*(?:[=<>|&^*/%+,-]|\b(?:and|or|xor|like|rlike|regexp|from|div|in|is)\b|--|#)"#,
    ),
    (
        "sqli-161",
        "SQL function call nested in a string concatenation or comparison",
        r#"['"`]\s*(?:\|\||\+|&&|\^|\*|/|%|<<|>>|-|=)\s*\(?\s*(?:select|sleep|benchmark|char|chr|ascii|concat|substring|if|case|version|database|user|md5|rand|cast|convert|ord|hex|extractvalue|updatexml)\b"#,
    ),
    (
        "sqli-162",
        "SQL function name followed by a parenthesis",
        r#"\b(?:concat|concat_ws|group_concat|string_agg|listagg|nchar|ascii|unhex|substring|substr|extractvalue|updatexml|database|schema|current_user|system_user|session_user|md5|sha1|sha2|ifnull|isnull|nullif|coalesce|make_set|export_set|json_extract|xmltype|unistr|name_const|geometrycollection|multipoint|polygon|multilinestring|multipolygon|linestring|last_insert_id|found_rows|row_count|strcmp|load_file|benchmark|sleep|pg_sleep|char_length|character_length|octet_length|bit_length|soundex|quotename|replicate|patindex|charindex|db_name|user_name|host_name|suser_name|object_id|object_name|col_name|has_dbaccess|is_srvrolemember|convert_tz|from_base64|to_base64|inet_aton|inet_ntoa|aes_decrypt|aes_encrypt|des_decrypt|old_password|crc32|utc_date|dayofweek|dayofyear|find_in_set)\s*\(|\b(?:difference|reverse|stuff|uncompress|compress|encode|decode|encrypt|password|conv|oct|bin|lpad|rpad|ltrim|rtrim|trim|lcase|ucase|lower|upper|minute|hour|second|weekday|dayname|monthname|now|sysdate|curdate|curtime|timestamp|elt|field|insert|locate|instr|position|repeat|replace|space|format|rand|floor|ceil|ceiling|round|truncate|abs|pi|pow|power|sqrt|exp|ln|log|log2|log10|sign|degrees|radians|mid|char|chr|ord|hex|cast|convert|version|user|if|iif|left|right|length|len|avg|sum|min|max|date|default|day|month|year|week|quarter|current_date|current_time|localtime|sysdatetime|getdate)\(\s*(?:[\d'"@)]|select\b|0x|null\b|\w+\s*[,)]|$)"#,
    ),
    (
        "sqli-170",
        "ORDER BY / GROUP BY / HAVING / LIMIT probing",
        r#"(?:['"`)]|\d)\s*(?:order|group)\s+by\s+[\w(`'"]|\bhaving\b\s*[\w(]+\s*(?:=|<|>|like)|\blimit\s+\d+\s*(?:,|offset)\s*\d+\s*(?:--|#|;|$)|\bprocedure\s+analyse\b"#,
    ),
    (
        "sqli-171",
        "CASE WHEN / conditional probe",
        r"\bcase\s+when\b[\s\S]{0,100}\bthen\b|\bif\s*\([^)]*?(?:=|<|>|like|select)[^)]*?,",
    ),
    (
        "sqli-180",
        "MySQL / MSSQL / PostgreSQL specific syntax",
        r#"(?:\bexec(?:ute)?\s+(?:master|xp_|sp_|@|\()|\bdeclare\s+@\w+|::\s*(?:int|text|varchar|bytea|jsonb?|regclass)\b|@@\w+|\bcollate\s+\w+|\bnull\s*,\s*null\b|\bcharset\s*\(|\bbinary\s+['"\w]|0x[0-9a-f]{6,}\b|\bx'[0-9a-f]+'|\bchar\s*\(\s*\d+\s*(?:,\s*\d+\s*)+\))"#,
    ),
    (
        "sqli-190",
        "quote-delimited SQL operator sequence",
        r#"['"`]\s*(?:\|\||\+|&&|\^|<=>|<>|!=|=|<|>|\bdiv\b|\bmod\b|\blike\b|\brlike\b|\bregexp\b|\bsounds\s+like\b|\bis\s+(?:not\s+)?null\b|\bbetween\b|\bin\b)\s*['"`(\d@-]"#,
    ),
    (
        "sqli-192",
        "quoted list or arithmetic continuing a broken string",
        r#"^\s*['"`]\s*(?:,\s*['"`\d]|\*\s*\d|\]\s*\[|\)\s*[,;])|['"`]\s*,\s*['"`]\s*,\s*['"`]|^\s*["'`]\d+\s*[*/%^]\s*\d"#,
    ),
    (
        "sqli-193",
        "string broken by a quote and closed by an SQL comment, or quote-operator-comment",
        r#"['"`][^'"\n]{0,60}(?:--|#)\s*-?\s*$|['"]\s*[=?*]\s*(?:#|--|from\b)|['"]\s*\?[|&]?\s*(?:['"]|array\s*\[)"#,
    ),
    (
        "sqli-194",
        "value that is only an SQL operator, IN list or comparison fragment",
        r#"^\s*(?:regexp|rlike|xor|is\s+(?:not\s+)?null|>>|<<|&&|\|\||!=|<=>?|>=|<>|==|->>?|(?:order|group)\s+by)\s*$|^\s*\{?\s*"?\s*in\s*\(\s*[\w'"-]+\s*(?:,\s*(?:and\s+)?[\w'"-]+\s*)*\)\s*"?|^\s*(?:[\w'"]+\s*,\s*)?\d+\s*=\s*\d+\s*$|\b\d+\s+is\s+not\s+\d"#,
    ),
    (
        "sqli-195",
        "SQL function name opening a call the value leaves unclosed",
        r#"\b(?:if|in|ln|log|log2|log10|exp|sin|cos|tan|cot|asin|acos|atan|sqrt|pow|length|left|right|user|time|date|day|month|year|minute|hour|second|quarter|week|version|values|floor|ceil|round|rand|password|local|compress|uncompress|encode|decode|md5|sha1|char|ascii|concat|substr|substring|mid|count|sum|avg|min|max|cast|convert|sleep|benchmark|div|lo_get|lo_import|json|ord|hex|unhex|elt|field|instr|locate)\b[^\w\s(]{0,8}\s*[^\w\s(]{0,8}\s*\(\s*$|\b(?:div|lo_get|lo_put|lo_from_bytea)\s*\(\s*[\d.\s,-]+\)"#,
    ),
    (
        "sqli-196",
        "bare SQL type, catalog or driver name as the whole value",
        r#"^\s*['"`]?(?:tempdb|msdb|northwind|nvarchar|varchar|nchar|varbinary|msdasql|sqloledb|openquery|regexp|rlike|xor)['"`]?\s*$|\b(?:msdasql|sqloledb|openquery)\b"#,
    ),
    (
        "sqli-197",
        "statement or operator cut at the end of a value (query completed by the application)",
        r#"[\w'"`)]\s+(?:or|and|xor|\|\||&&)\s*\(?\s*$|^\s*(?:--|#|;)\s*(?:alter|drop|select|insert|update|delete|create|truncate|exec)\b|\bset\s+@@?\w+|[=(]\s*\(\s*select\b|^\s*execute\s+[a-z_]\w*\s*$|\bfrom\s+[\w`]+\s+(?:group|order)\s+by\b|\blike\s*['"`]\s*$|['"`]\s*(?:regexp|rlike|like|glob)\s*$"#,
    ),
    (
        "sqli-198",
        "string broken out of: quote then SQL keyword, JSON key break-out, quoted lists",
        r#"^\s*['"`]\s*(?:select|union|insert|update|delete|drop|exec|glob|like|rlike|regexp|div|between|sounds)\b|^\s*"\s*:\s*\[?\s*"?\s*\[?\d|^\s*'[^'\d]*\d+\s*:\s*\d|^\s*['"][^'"]{0,12}['"]\s*,\s*(?:['"]|\d)|^\s*["'`]{1,3}\s*\*\s*\d|\d\s*['"`]\s*['"`]\s*\d|['"]\s*\d+\s+or\s+\d|['"]\s*(?:or|and)\s+\w+\s*\(|['"]\s*(?:or|and)\s+\w+\s+\d|['"]\s*,\s*0x[0-9a-f]+|\\['"]\s*(?:and|or|union|select)\b|['"`]\s*;\s*$|^\s*`[^`]+`\s*$|^\s*'\w+'\s*$"#,
    ),
    (
        "sqli-199",
        "SQL syntax glued or hidden: UNION/SELECT without spaces, versioned comments, CASE WHEN, hex, exponent notation",
        r#"['"`\d]\s*union[\s+(]+(?:all[\s+(]+)?select\b|union\s*(?:all\s*)?select\s*\S*\s*from|!\d{4,5}\s*(?:select|from|union|where|and|or)\b|\)\s*(?:like|rlike|regexp|glob)\s*\(|\bwhen\s+(?:\d+|'[^']*')\s+then\b|\bas\s*['"`]\s*from\b|\bas\s+not\s+from\b|\b0x[0-9a-f]{4,}|\b\d\.e\s*[(.]|\b(?:and|or)\s+['"]\d+['"]"#,
    ),
    (
        "sqli-191",
        "JSON or array operator abuse",
        r#"(?:->>?|#>>?|@>|<@|\?\||\?&)\s*'|\bjson_\w+\s*\("#,
    ),
];
