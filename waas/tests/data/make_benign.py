#!/usr/bin/env python3
"""Generates benign.jsonl: ordinary API and browser requests (deterministic, seed 15).

Written for this project. Each line: method, uri, headers, data. Covers search queries with
quotes and apostrophes, names, JSON API bodies, markdown, URLs in parameters, forms, cookies,
GraphQL, pagination and filters, as browsers and API clients send them.
"""
import json, random, urllib.parse as up

random.seed(15)
UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "curl/8.5.0", "python-requests/2.32.3", "okhttp/4.12.0", "Go-http-client/1.1", "axios/1.7.7",
    "PostmanRuntime/7.42.0", "Amazon CloudFront", "ELB-HealthChecker/2.0",
]
ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
SEARCH = [
    "O'Brien", "Shaquille O'Neal", "rock 'n' roll", "\"exact phrase\" search", "don't stop believin'",
    "Ben & Jerry's", "C++ tutorial", "what is 2+2?", "50% off shoes", "size 10.5 (US)",
    "jack o'lantern", "it's a test", "mother's day gifts", "\"hello world\" in rust", "select a plan",
    "drop shipping supplier", "union station chicago", "order by price", "1=1 meaning", "where is my order",
    "café crème", "naïve bayes", "日本語 テスト", "Zoë's kitchen", "São Paulo weather",
    "how to use <div> in html", "email me at jane.doe@example.com", "rm -rf explained", "cat videos",
    "java.util list tutorial", "python vs perl", "script writing course", "alert dialog design",
    "password reset not working", "/etc/hosts file windows", "table for two", "insert coin",
    "delete account", "update my address", "create new project", "grant application deadline",
    "sleep apnea", "benchmark results 2024", "eval season", "prompt engineering", "confirm booking",
    "Let's go!", "Rock & Roll Hall of Fame", "AT&T store", "M&M's", "Q&A session", "he said \"hi\"",
    "10/20/2024", "5' 10\" height", "user@domain", "#hashtag", "@mention", "$100 budget", "100% cotton",
    "a-b_c.d", "x < y and y > z", "mean +/- sd", "Tom and Jerry", "salt and pepper", "or else",
    "black or white", "in or out", "yes and no", "online ordering", "onion rings", "one-on-one",
]
NAMES = ["Mary O'Connor", "D'Angelo Russell", "José Álvarez", "Anne-Marie Smith", "Li Wei", "Renée Zellweger",
         "John \"Johnny\" Doe", "Dr. Who", "O'Reilly Media", "Miles O'Brien"]
MD = [
    "# Release notes\n\n* Fixed a bug where the *cart* didn't update.\n* Added `--verbose` flag.\n\nSee [docs](https://example.com/docs) for more.",
    "## Hello\n\nThis is **bold** and _italic_. Here's a list:\n\n1. one\n2. two\n\n> quote from O'Neil",
    "Use `SELECT` wisely -- it's powerful. Read the [guide](https://docs.example.org/sql-guide).",
    "```\nnpm install\nnpm run build\n```\nThen open http://localhost:3000 in your browser.",
    "I'd like to order 3 items & get them by Friday. Thanks!",
    "Meeting notes (2024-05-01): discussed Q2 roadmap; action items: Alice -> API, Bob -> UI.",
    "Price: $19.99 (was $29.99). Save 33%!",
    "Email support@example.com or call +1 (555) 123-4567.",
    "The ratio is 3:2 and the result was 42 / 7 = 6.",
    "Great product!!! 5/5 would buy again :) <3",
]
URLS = ["https://example.com/page?x=1", "https://www.google.com/search?q=test", "http://localhost:8080/callback",
        "https://app.example.org/login?next=%2Fdashboard", "https://cdn.example.net/img/logo.png",
        "https://github.com/rust-lang/rust/issues/12345", "https://docs.aws.amazon.com/ecs/latest/developerguide/",
        "https://en.wikipedia.org/wiki/O%27Reilly_Media", "mailto:jane@example.com", "https://example.com/#section-2"]
PATHS = ["/", "/index.html", "/api/v1/users", "/api/v1/orders/12345", "/products/shoes/running", "/static/js/app.3f2a1b.js",
         "/static/css/main.css", "/images/banner.jpg", "/favicon.ico", "/api/v2/search", "/blog/2024/05/hello-world",
         "/account/settings", "/cart", "/checkout/payment", "/graphql", "/healthz", "/login", "/logout",
         "/docs/getting-started", "/api/v1/items/abc-123/comments", "/robots.txt", "/sitemap.xml",
         "/user/profile/jane.doe", "/download/report-2024-Q1.pdf", "/api/v1/files/upload"]

def headers(api=False):
    h = {"Host": "shop.example.com", "User-Agent": random.choice(UAS)}
    if api:
        h["Accept"] = "application/json"
        h["Authorization"] = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dGVzdHNpZ25hdHVyZQ"
    else:
        h["Accept"] = ACCEPT
        h["Accept-Language"] = "en-US,en;q=0.9,fr;q=0.8"
        h["Accept-Encoding"] = "gzip, deflate, br"
        if random.random() < 0.7:
            h["Referer"] = random.choice(URLS[:7])
        if random.random() < 0.7:
            h["Cookie"] = "sessionid=%032x; _ga=GA1.2.%d.%d; theme=dark; consent=true" % (
                random.getrandbits(128), random.randint(1e8, 1e9), random.randint(1e9, 2e9))
        h["Sec-Fetch-Mode"] = "navigate"
        h["Upgrade-Insecure-Requests"] = "1"
    return h

out = []
def add(method, uri, h, data=""):
    out.append({"method": method, "uri": uri, "headers": h, "data": data})

for p in PATHS:
    add("GET", p, headers())
for q in SEARCH:
    add("GET", "/search?" + up.urlencode({"q": q, "page": random.randint(1, 9)}), headers())
    add("GET", "/api/v2/search?" + up.urlencode({"query": q, "sort": random.choice(["price", "-date", "relevance"])}), headers(True))
for n in NAMES:
    h = headers(True); h["Content-Type"] = "application/json"
    add("POST", "/api/v1/users", h, json.dumps({"name": n, "email": "x@example.com", "age": 33, "tags": ["a", "b"]}))
    h = headers(); h["Content-Type"] = "application/x-www-form-urlencoded"
    add("POST", "/signup", h, up.urlencode({"full_name": n, "password": "S3cr3t!pass'#", "remember": "on"}))
for m in MD:
    h = headers(True); h["Content-Type"] = "application/json"
    add("POST", "/api/v1/posts", h, json.dumps({"title": "Update", "body": m, "draft": False}))
    h = headers(); h["Content-Type"] = "application/x-www-form-urlencoded"
    add("POST", "/comments", h, up.urlencode({"comment": m, "post_id": "42"}))
for u in URLS:
    add("GET", "/redirect?" + up.urlencode({"url": u}), headers())
    add("GET", "/oauth/authorize?" + up.urlencode({"client_id": "abc", "redirect_uri": u, "state": "xyz123", "scope": "openid profile"}), headers())
    h = headers(True); h["Content-Type"] = "application/json"
    add("POST", "/api/v1/webhooks", h, json.dumps({"target": u, "events": ["order.created"]}))
for i in range(40):
    add("GET", "/api/v1/orders?" + up.urlencode({"status": random.choice(["open", "shipped"]), "limit": 50, "offset": i * 50,
        "from": "2024-01-%02d" % (i % 28 + 1), "fields": "id,total,created_at"}), headers(True))
    add("GET", "/products?" + up.urlencode({"category": random.choice(["men's shoes", "kids' toys", "home & garden"]),
        "price_min": 10, "price_max": 99.5, "color": "red,blue"}), headers())
GQL = ['{ user(id: "42") { name orders(first: 10) { id total } } }',
       'mutation { addComment(postId: 5, body: "Nice post, O\'Brien!") { id } }',
       'query Search($q: String!) { search(q: $q) { ... on Product { id name } } }']
for g in GQL:
    h = headers(True); h["Content-Type"] = "application/json"
    add("POST", "/graphql", h, json.dumps({"query": g, "variables": {"q": "shoes"}}))
for i in range(20):
    h = headers(True); h["Content-Type"] = "application/json"
    add("PUT", "/api/v1/orders/%d" % (1000 + i), h, json.dumps({"items": [{"sku": "SKU-%d" % i, "qty": 2, "note": random.choice(SEARCH)}],
        "address": {"line1": "12 O'Connell St.", "city": "Dublin", "zip": "D01 F5P2"}, "gift": True}))
    add("DELETE", "/api/v1/cart/items/%d" % i, headers(True))
    add("PATCH", "/api/v1/users/me", dict(headers(True), **{"Content-Type": "application/json"}), json.dumps({"bio": random.choice(MD)}))
b = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
for i in range(10):
    h = headers(); h["Content-Type"] = "multipart/form-data; boundary=" + b
    add("POST", "/api/v1/files/upload", h, "--%s\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\n%s\r\n--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.txt\"\r\nContent-Type: text/plain\r\n\r\nhello world, it's a file\r\n--%s--\r\n" % (b, random.choice(SEARCH), b, b))
for i in range(10):
    h = headers(); h["Content-Type"] = "application/x-www-form-urlencoded"
    add("POST", "/login", h, up.urlencode({"username": "jane.o'hara", "password": "p@ss'word\"123;--ok", "csrf": "a1b2c3d4e5f6"}))

# Prose and docs-site searches of the kinds the SQL and shell patterns risk: SQL words, and/or,
# semicolons, pipes, command names, CRLF text from a textarea. Appended last so the requests
# above stay the same.
PROSE = [
    "how to select rows from a table in excel", "union of two sets in math", "drop table tennis lessons",
    "cats and dogs or birds", "time management tips", "nohup vs disown", "ls command options",
    "chef recipes for dinner", "date night ideas", "top 10 movies of 2024", "at home workouts",
    "who is the author?", "fish and chips; mushy peas", "red | green | blue", "1 or 2 bedrooms",
    "cream or milk", "execute order 66", "order by date", "is null or empty", "where to eat in Rome",
    "bash script tutorial", "find files by name on linux", "git log --oneline", "echo chamber meaning",
    "if you can't beat them", "for each loop in java", "the ~ key", "!important in css",
    "C:\\Users\\jane\\Documents", "ping me later", "curl your hair", "sleep well tonight",
    "Update: shipped; thanks & regards", "Mr. Smith's order (#1234) and Mrs. Jones' order",
    "the 'best' option", "pick 'any' two", "and then there were none", "this or that",
    "who, what, where, when", "a+b=c", "x || y in javascript", "logical && operator",
    "count(*) vs count(1)", "size (M)", "user guide (pdf)", "version (2.1)", "sum of squares",
    "Tea; coffee; juice", "docker vs podman", "kubectl tutorial", "python3 -m venv explained",
]
TEXTAREA = [
    "Hi,\r\nPlease list 3 items I forgot.\r\nThanks",
    "Quit smoking tips\r\nData science course\r\nHelp wanted",
    "Order #4412\r\nUser: jane\r\nStatus: shipped; tracking soon",
    "Step 1: select a plan\r\nStep 2: drop us a line\r\nStep 3: union jack flag",
]
for q in PROSE:
    add("GET", "/docs/search?" + up.urlencode({"q": q}), headers())
for t in TEXTAREA:
    h = headers(); h["Content-Type"] = "application/x-www-form-urlencoded"
    add("POST", "/contact", h, up.urlencode({"message": t, "topic": "support"}))
print("\n".join(json.dumps(x, ensure_ascii=False) for x in out))
