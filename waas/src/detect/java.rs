//! Java attacks (JNDI / Log4Shell lookups with their obfuscations, class names, deserialization
//! gadgets, OGNL / SpEL expressions) and Shellshock (lowercased decoded text).

use super::PatternRule;

/// `(id, description, pattern)`.
pub(crate) const RULES: &[PatternRule] = &[
    (
        "java-110",
        "JNDI lookup (Log4Shell), including nested-lookup obfuscation",
        r"\$\{\s*(?:j|\$\{[^}]*\})[^}]{0,200}?(?:n|\$\{[^}]*\})[^}]{0,200}?(?:d|\$\{[^}]*\})[^}]{0,200}?(?:i|\$\{[^}]*\})[^}]{0,200}?:|\$\{\s*(?:jndi|ctx|env|sys|java|date|lower|upper|main|map|sd|spring|k8s|docker|log4j|bundle|web|base64|marker)\s*:|\$\{(?:\$\{[^}]*\}|[^}]){0,100}?(?:ldaps?|rmi|dns|iiop|corba|nds|nis|http)(?:\}|:|\$)",
    ),
    (
        "java-120",
        "Java runtime, reflection or process class",
        r"\bjava\.(?:lang|io|net|nio|util|beans|rmi|security|sql)\.[a-z]|\bjavax\.(?:naming|script|management|xml)\b|\b(?:runtime\s*\.\s*getruntime|getruntime\s*\(|processbuilder|processimpl|unixprocess|classloader|urlclassloader|scriptengine(?:manager)?|getdeclared(?:method|field|constructor)s?|getmethod\s*\(|\.invoke\s*\(|newinstance\s*\(|class\.forname|forname\s*\(|defineclass|instantiatefactory|invokertransformer|chainedtransformer|constanttransformer|instantiatetransformer|templatesimpl|bytearrayinputstream|objectinputstream|xmldecoder|xstream|jdbcrowsetimpl|whileclosure|methodclosure|getclass\s*\(\s*\)|\.exec\s*\()",
    ),
    (
        "java-130",
        "known deserialization gadget or library class",
        r"\b(?:org\.apache\.(?:commons\.(?:collections|beanutils|fileupload)|xalan|tomcat|catalina|struts2?|wicket|myfaces|log4j|shiro|el|naming|bcel)|com\.sun\.(?:org\.apache|rowset|jndi|management|xml)|org\.springframework\.|org\.codehaus\.groovy|groovy\.(?:lang|util)|com\.mchange\.v2|com\.alibaba\.fastjson|org\.hibernate\.|bsh\.|clojure\.|sun\.(?:misc|reflect|rmi))",
    ),
    (
        "java-140",
        "serialized Java object",
        r"\bro0ab[a-z0-9+/]|^\s*aced0005|\bh4sia{7,}",
    ),
    (
        "java-150",
        "OGNL / SpEL / EL expression",
        r"%\{\s*[#(@]|\$\{\s*#|#_memberaccess|@ognl|ognlcontext|#context\[|\bt\s*\(\s*java\.|#\{\s*['\w]*\s*\.\s*(?:getclass|class)|\bclass\.module\.classloader|\bclass\.classloader|\.getclass\(\)\.forname|\bexpressionfactory\b|\bnew\s+java\.",
    ),
];

/// Shellshock function definitions in headers and cookies.
pub(crate) const SHELLSHOCK_RULES: &[PatternRule] = &[(
    "shellshock-110",
    "bash function definition (Shellshock)",
    r"\(\s*\)\s*\{[^}]*\}\s*;?",
)];
