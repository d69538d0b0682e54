#!/usr/bin/env python3
"""Extract the OWASP CRS regression payloads this crate's benchmark uses.

Source: https://github.com/coreruleset/coreruleset (Apache-2.0), tests/regression/tests/.
Usage: extract_crs.py <path to a coreruleset git dir> > crs.jsonl
Keeps only tests whose expected log lists the file's own rule id (i.e. the attack must be found),
one JSON object per line: family, rule_id, test_id, method, uri, headers, data.
"""
import json, subprocess, sys, yaml

FAMILIES = {
    "REQUEST-942-APPLICATION-ATTACK-SQLI": "sqli",
    "REQUEST-941-APPLICATION-ATTACK-XSS": "xss",
    "REQUEST-932-APPLICATION-ATTACK-RCE": "cmdi",
    "REQUEST-930-APPLICATION-ATTACK-LFI": "lfi",
    "REQUEST-931-APPLICATION-ATTACK-RFI": "rfi",
    "REQUEST-944-APPLICATION-ATTACK-JAVA": "java",
    "REQUEST-913-SCANNER-DETECTION": "scanner",
}

def git(repo, *args):
    return subprocess.run(["git", "--git-dir", repo, *args], check=True, capture_output=True).stdout

def main():
    repo = sys.argv[1]
    commit = git(repo, "rev-parse", "HEAD").decode().strip()
    print(json.dumps({"source": "https://github.com/coreruleset/coreruleset", "commit": commit,
                      "licence": "Apache-2.0"}))
    names = git(repo, "ls-tree", "-r", "--name-only", "HEAD", "tests/regression/tests").decode().split()
    for name in sorted(names):
        parts = name.split("/")
        fam = FAMILIES.get(parts[3]) if len(parts) > 4 else None
        if not fam or not name.endswith(".yaml"):
            continue
        doc = yaml.safe_load(git(repo, "show", f"HEAD:{name}"))
        rule = doc.get("rule_id")
        for t in doc.get("tests", []):
            for st in t.get("stages", []):
                inp, out = st.get("input", {}), st.get("output", {})
                log = out.get("log") or {}
                if rule not in (log.get("expect_ids") or []):
                    continue
                if "encoded_request" in inp or "uri" not in inp:
                    continue
                data = inp.get("data", "")
                if isinstance(data, list):
                    data = "\r\n".join(str(x) for x in data)
                headers = {str(k): str(v) for k, v in (inp.get("headers") or {}).items()}
                print(json.dumps({"family": fam, "rule_id": rule, "test_id": t.get("test_id"),
                                  "method": inp.get("method", "GET"), "uri": str(inp["uri"]),
                                  "headers": headers, "data": str(data)}))

main()
