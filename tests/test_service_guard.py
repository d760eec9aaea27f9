"""The shipped scrapyd configuration against hostile pages and clients, over HTTP to a real
scrapyd process (``tests/helpers/scrapyd.py``): the token never leaves for a host the operator did
not allow, whatever ``schedule.json`` is sent; every route refuses a foreign Host (DNS
rebinding) and a POST from another origin (host AND port); egg uploads are off; scrapyd
refuses to listen beyond loopback without credentials."""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request

import pytest

from tests.helpers.crawl import TOKEN
from tests.helpers.emulator import Listener
from tests.helpers.scrapyd import Scrapyd, free_port
from vkscraper.store import open_store

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """scrapyd whose operator allows no API URL but VK's, at VK's rate, and one proxy name."""
    tmp = tmp_path_factory.mktemp("guard")
    database = f"sqlite:///{tmp / 'vk.sqlite3'}"
    env = {"VKSCRAPER_API_URLS": "", "VKSCRAPER_MAX_RPS": "",
           "VKSCRAPER_ALLOWED_HOSTS": "scraper.example"}  # fmt: skip
    with Scrapyd(tmp / "scrapyd", database_url=database, token=TOKEN, env=env) as scrapyd:
        scrapyd.database_url = database  # type: ignore[attr-defined]
        yield scrapyd


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory):
    """The same with scrapyd's own, unguarded schedule.json: what the crawl itself refuses
    when every setting reaches it (a scrapyd configured without our [services] lines)."""
    tmp = tmp_path_factory.mktemp("plain")
    database = f"sqlite:///{tmp / 'vk.sqlite3'}"
    # A crawl that a broken guard let through goes to a closed local port, never to VK.
    env = {"VKSCRAPER_API_URLS": DEAD_END, "VKSCRAPER_MAX_RPS": ""}
    services = {"schedule.json": "scrapyd.webservice.Schedule"}
    with Scrapyd(tmp / "scrapyd", database_url=database, token=TOKEN, env=env,
                 services=services) as scrapyd:  # fmt: skip
        scrapyd.database_url = database  # type: ignore[attr-defined]
        yield scrapyd


# What a client (a local process, no browser needed) could send through scrapyd's own
# schedule.json to get the token or lift the rate limit (an independent review's findings).
HOSTILE_SETTINGS = [
    # the telnet console runs code in the crawl: os.environ["VK_ACCESS_TOKEN"]
    (["TELNETCONSOLE_ENABLED=True", "TELNETCONSOLE_PASSWORD=pw"], "TELNETCONSOLE_ENABLED"),
    (["REMOTE_CONTROL_ENABLED=True"], "REMOTE_CONTROL_ENABLED"),
    # the HTTP cache after the token would store it on disk
    (['DOWNLOADER_MIDDLEWARES={"vkscraper.downloadermiddlewares.auth.VkAuthMiddleware": 800}',
      "HTTPCACHE_ENABLED=True"], "DOWNLOADER_MIDDLEWARES"),
    (['DOWNLOADER_MIDDLEWARES={"scrapy.downloadermiddlewares.httpcache.HttpCacheMiddleware"'
      ': 995}', "HTTPCACHE_ENABLED=True"], "DOWNLOADER_MIDDLEWARES"),
    # Scrapy's own handler without the per-token limit, and a slot without delay
    (['DOWNLOAD_HANDLERS={"http": "scrapy.core.downloader.handlers.http11.'
      'HTTP11DownloadHandler"}'], "DOWNLOAD_HANDLERS"),
    (['DOWNLOAD_SLOTS={"vk-08f94b8d": {"delay": 0, "concurrency": 16}}'], "DOWNLOAD_SLOTS"),
    (["VK_REQUESTS_PER_SECOND=1000"], "VK_REQUESTS_PER_SECOND"),
]  # fmt: skip


DEAD_END = "http://127.0.0.1:9/method/"  # the discard port: nothing listens there


def schedule(server: Scrapyd, settings: list[str]) -> tuple[int, dict]:
    data = [("project", "vkscraper"), ("spider", "vk"), ("groups", "1")]
    return server.call("POST", "/schedule.json", data=data + [("setting", s) for s in settings])


@pytest.mark.parametrize(("settings", "named"), HOSTILE_SETTINGS)
def test_schedule_json_takes_only_the_settings_collect_json_takes(server, settings, named):
    """The shipped schedule.json refuses what collect.json refuses (400 naming it), and
    queues nothing."""
    status, answer = schedule(server, settings)
    assert status == 400 and answer["status"] == "error", answer
    assert named in answer["message"], answer
    _, jobs = server.call("GET", "/listjobs.json?project=vkscraper")
    assert not jobs["pending"] and not jobs["running"], jobs


@pytest.mark.parametrize(("settings", "named"), HOSTILE_SETTINGS)
def test_the_crawl_itself_refuses_what_would_undo_its_guards(plain_server, settings, named):
    """With every setting reaching the crawl (scrapyd's plain schedule.json), the crawl
    refuses to start and its job log names the setting; nothing reached VK's side."""
    status, answer = schedule(plain_server, [*settings, f"VK_API_URL={DEAD_END}"])
    assert status == 200 and answer["status"] == "ok", answer
    wait_finished(plain_server, answer["jobid"])
    log = plain_server.job_logs(answer["jobid"])
    assert "crawl refused" in log and named in log, log[-2000:]
    assert TOKEN not in log


def send(server: Scrapyd, method: str, path: str, body: bytes | None = None,
         **headers: str) -> tuple[int, str]:  # fmt: skip
    """A raw request with chosen headers (Host and Origin as a browser would send them)."""
    if body is not None:
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    request = urllib.request.Request(server.url + path, body, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def tasks(server: Scrapyd) -> int:
    with open_store(server.database_url) as store:  # type: ignore[attr-defined]
        store.migrate()
        return len(store.list_tasks(10_000))


def wait_finished(server: Scrapyd, jobid: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, jobs = server.call("GET", "/listjobs.json?project=vkscraper")
        if any(j["id"] == jobid for j in jobs["finished"]):
            return
        time.sleep(0.3)
    raise AssertionError(f"job {jobid} not finished: {server.output()[-3000:]}")


def test_schedule_json_never_sends_the_token_to_a_host_the_operator_did_not_allow(
    server, plain_server
):
    """HIGH 1: scrapyd's own schedule.json with VK_API_URL pointing at a listener: refused by
    the shipped route, and by the crawl itself behind scrapyd's plain one."""
    listener = Listener()
    try:
        status, answer = server.call(
            "POST", "/schedule.json",
            data=[("project", "vkscraper"), ("spider", "vk"), ("groups", "1"),
                  ("setting", f"VK_API_URL={listener.url}")],
        )  # fmt: skip
        assert status == 400 and "VK_API_URL: not an allowed URL" in answer["message"], answer
        server = plain_server
        status, answer = server.call(
            "POST", "/schedule.json",
            data=[("project", "vkscraper"), ("spider", "vk"), ("groups", "1"),
                  ("setting", f"VK_API_URL={listener.url}")],
        )  # fmt: skip
        assert status == 200 and answer["status"] == "ok", answer
        wait_finished(server, answer["jobid"])
        time.sleep(0.5)
    finally:
        listener.close()
    assert listener.connections == 0 and listener.received == b""
    log = server.job_logs()
    assert f"VK_API_URL '{listener.url}' is not VK's API nor allowed by the operator" in log
    assert "VKSCRAPER_API_URLS environment variable" in log
    assert TOKEN not in log and TOKEN not in server.output()


def test_schedule_json_cannot_lift_the_rate_limit(server, plain_server):
    """MEDIUM 4: a client's setting= above the operator's ceiling stops the crawl."""
    status, answer = plain_server.call(
        "POST", "/schedule.json",
        data=[("project", "vkscraper"), ("spider", "vk"), ("groups", "1"),
              ("setting", "VK_REQUESTS_PER_SECOND=1000")],
    )  # fmt: skip
    assert status == 200, answer
    wait_finished(plain_server, answer["jobid"])
    assert "VK_REQUESTS_PER_SECOND 1000 is above 3 per token" in plain_server.job_logs()
    status, answer = server.call(
        "POST", "/collect.json", data=[("groups", "1"), ("setting", "VK_RATE_MARGIN=1")]
    )
    assert status == 400 and "VK_RATE_MARGIN below 1.05" in answer["message"], answer


@pytest.mark.parametrize(
    "path",
    ["/schedule.json", "/cancel.json", "/delproject.json", "/delversion.json",
     "/collect.json", "/cancel-task.json", "/api/tasks/collect"],
)  # fmt: skip
def test_a_post_from_another_port_of_the_same_host_is_refused(server, path):
    """Another port is another origin: a page served there must not start or cancel crawls
    (issue 17's mutation sample: comparing host names only)."""
    before = tasks(server)
    other = free_port()
    origins = [f"http://127.0.0.1:{other}", "http://127.0.0.1", "https://127.0.0.1",
               "http://evil.example", "null", f"http://x@127.0.0.1:{server.port}"]  # fmt: skip
    for origin in origins:
        status, body = send(server, "POST", path, b"project=vkscraper&spider=vk&groups=1",
                            Origin=origin)  # fmt: skip
        assert status == 403, (path, origin, body)
        assert "cross-site request refused" in body
    assert tasks(server) == before


def test_a_post_from_our_own_origin_passes(server):
    status, body = send(server, "POST", "/schedule.json", b"project=nope&spider=vk",
                        Origin=f"http://127.0.0.1:{server.port}")  # fmt: skip
    assert status == 200 and "project 'nope' not found" in body, body
    status, body = send(server, "POST", "/schedule.json", b"project=nope&spider=vk",
                        Origin=f"http://localhost:{server.port}",
                        Host=f"localhost:{server.port}")  # fmt: skip
    assert status == 200 and "project 'nope' not found" in body, body


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", "/tasks.json", None), ("GET", "/api/tasks", None), ("GET", "/tasks", None),
     ("GET", "/listjobs.json?project=vkscraper", None), ("GET", "/logs/", None),
     ("GET", "/", None), ("POST", "/collect.json", b"groups=club1"),
     ("POST", "/schedule.json", b"project=vkscraper&spider=vk&groups=1")],
)  # fmt: skip
def test_dns_rebinding_is_refused_on_every_route(server, method, path, body):
    """MEDIUM 5: a page whose own name now resolves to us sends its name as Host (and as
    Origin): reads and writes are refused, scrapyd's routes included."""
    before = tasks(server)
    rebound = f"rebind.attacker.example:{server.port}"
    for headers in ({"Host": rebound}, {"Host": rebound, "Origin": f"http://{rebound}"},
                    {"Host": f"127.0.0.1.attacker.example:{server.port}"},
                    {"Host": f"127.0.0.1:{free_port()}"}):  # fmt: skip
        status, answer = send(server, method, path, body, **headers)
        assert status == 403, (headers, answer)
        assert "is not a name of this service" in answer and "VKSCRAPER_ALLOWED_HOSTS" in answer
    assert tasks(server) == before


def test_the_names_the_service_answers_to(server):
    port = server.port
    names = [f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", "scraper.example",
             f"scraper.example:{port}"]  # fmt: skip
    for host in names:
        status, answer = send(server, "GET", "/tasks.json", Host=host)
        assert status == 200, (host, answer)
    # behind a TLS proxy: no port in Host, the Origin's scheme names it
    status, body = send(server, "POST", "/schedule.json", b"project=nope&spider=vk",
                        Host="scraper.example", Origin="https://scraper.example")  # fmt: skip
    assert status == 200 and "project 'nope' not found" in body, body


def test_egg_uploads_are_off_in_the_shipped_configuration(server):
    status, _ = send(server, "POST", "/addversion.json", b"project=x&version=1&egg=x")
    assert status == 404


def test_scrapyd_refuses_to_listen_beyond_loopback_without_credentials(tmp_path):
    database = f"sqlite:///{tmp_path / 'vk.sqlite3'}"
    open_server = Scrapyd(tmp_path / "open", database_url=database, token=TOKEN,
                          env={"SCRAPYD_BIND_ADDRESS": "0.0.0.0"})  # fmt: skip
    with pytest.raises(RuntimeError, match="scrapyd exited at start") as refused:
        open_server.start()
    open_server.stop()
    assert "would listen on 0.0.0.0 without credentials" in str(refused.value)
    # with credentials it starts
    with Scrapyd(tmp_path / "auth", database_url=database, token=TOKEN, auth=("u", "p"),
                 env={"SCRAPYD_BIND_ADDRESS": "0.0.0.0"}) as guarded:  # fmt: skip
        assert guarded.call("GET", "/daemonstatus.json")[0] == 200
        assert guarded.call("GET", "/daemonstatus.json", auth=None)[0] == 401


def test_a_page_of_another_origin_cannot_read_scrapyds_routes(server):
    """scrapyd answers `Access-Control-Allow-Origin: *`: a cross-origin read names its Origin
    and is refused; the same read without one (curl, ScrapydWeb) passes."""
    for path in ("/listjobs.json?project=vkscraper", "/daemonstatus.json", "/tasks.json"):
        status, _ = send(server, "GET", path, Origin="http://evil.example")
        assert status == 403, path
        assert send(server, "GET", path)[0] == 200, path


@pytest.mark.parametrize("header", ["Host", "Origin"])
def test_a_repeated_host_or_origin_header_is_refused(server, header):
    """No browser repeats them; a proxy may read the first where Twisted reads the last."""
    good = {"Host": f"127.0.0.1:{server.port}", "Origin": f"http://127.0.0.1:{server.port}"}
    evil = {"Host": "evil.example", "Origin": "http://evil.example"}
    before = tasks(server)
    for values in ([evil[header], good[header]], [good[header], good[header]]):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            conn.putrequest("POST", "/collect.json", skip_host=True)
            if header != "Host":
                conn.putheader("Host", good["Host"])
            for value in values:
                conn.putheader(header, value)
            body = b"groups=club1"
            conn.putheader("Content-Type", "application/x-www-form-urlencoded")
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            answer = response.read().decode()
        finally:
            conn.close()
        assert response.status == 400, (values, answer)
        assert f"the {header} header is given more than once" in answer
    assert tasks(server) == before
