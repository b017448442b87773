"""The operator console in headless Chromium against a real server.

One story, step by step, a screenshot at each (tests/console/screenshots/):
sign in with a key, search a contact, see the graph and the records on an
edge, explain a link, unmerge (with its confirmation), see the customer
split; markup in a stored contact value and in a label is shown as text;
a reader sees masked values; an interactive key signs in with a TOTP code;
an admin enrols a key and sees its QR code.
"""

from __future__ import annotations

import uuid

import pyotp
import pytest

from idlink.security.apikeys import create_key
from tests.http.conftest import HttpServer

pytest.importorskip("selenium")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

WAIT = 20
PHONE_1 = "+1 (555) 010-0001"
PHONE_2 = "+15550100002"
MARKUP_VALUE = '<img src=x onerror="window.__xss=1">'
MARKUP_LABEL = "<script>window.__xss=2</script><b>VIP</b>"


def _ok(answer):
    assert answer.status == 200, answer.body
    return answer.json


@pytest.fixture(scope="module")
def story(console_server: HttpServer):
    """An account with two people, a manual merge between them, markup and a journey."""
    account = f"console-{uuid.uuid4().hex[:8]}"
    tokens = {r: create_key(console_server.data, account, r) for r in ("reader", "agent", "admin")}
    admin = tokens["admin"]

    def link(source, record_id, contacts, day):
        return _ok(
            console_server.request(
                "POST",
                f"/v1/accounts/{account}/records:link",
                {
                    "source": source,
                    "recordId": record_id,
                    "contacts": contacts,
                    "observedAt": f"2024-01-0{day}T09:30:00Z",
                },
                token=admin,
            )
        )

    link(
        "crm",
        "r1",
        [{"type": "phone", "value": PHONE_1}, {"type": "email", "value": "ann@example.com"}],
        1,
    )
    link(
        "zendesk",
        "t1",
        [
            {"type": "email", "value": "ann@example.com"},
            {"type": "id", "value": MARKUP_VALUE, "source": "zendesk"},
        ],
        2,
    )
    link(
        "crm",
        "r2",
        [{"type": "phone", "value": PHONE_2}, {"type": "email", "value": "bob@example.com"}],
        3,
    )
    merged = _ok(
        console_server.request(
            "POST",
            f"/v1/accounts/{account}/customers:mergeKeys",
            {
                "contacts": [
                    {"type": "email", "value": "ann@example.com"},
                    {"type": "phone", "value": PHONE_2},
                ]
            },
            token=admin,
        )
    )
    pid = merged["customer"]["customerPid"]
    _ok(
        console_server.request(
            "POST",
            f"/v1/accounts/{account}/customers/{pid}:update",
            {"customer": {"customerPid": pid}, "addLabels": [MARKUP_LABEL, "VIP"]},
            token=admin,
        )
    )
    _ok(
        console_server.request(
            "POST",
            f"/v1/accounts/{account}/engagements",
            {
                "contact": {"type": "phone", "value": PHONE_1},
                "channel": "voice",
                "direction": "inbound",
                "summary": "asked about an invoice",
                "occurredAt": "2024-02-01T10:00:00Z",
            },
            token=admin,
        )
    )
    return {"account": account, "tokens": tokens, "manual_record": merged["recordId"]}


def _wait(browser, condition):
    return WebDriverWait(browser, WAIT).until(condition)


def _sign_in(browser, server: HttpServer, account: str, key: str, code: str = "") -> None:
    browser.get(f"http://127.0.0.1:{server.http_port}/console/")
    _wait(browser, ec.visibility_of_element_located((By.ID, "sign-in-form")))
    browser.find_element(By.ID, "sign-in-account").send_keys(account)
    browser.find_element(By.ID, "sign-in-key").send_keys(key)
    if code:
        browser.find_element(By.ID, "sign-in-code").send_keys(code)
    browser.find_element(By.ID, "sign-in-submit").click()


def _signed_in(browser) -> None:
    _wait(browser, ec.visibility_of_element_located((By.ID, "app")))


def _search(browser, type_: str, value: str) -> None:
    field = browser.find_element(By.ID, "search-type")
    field.clear()
    field.send_keys(type_)
    box = browser.find_element(By.ID, "search-value")
    box.clear()
    box.send_keys(value)
    browser.find_element(By.ID, "search-submit").click()
    _wait(browser, ec.presence_of_element_located((By.CSS_SELECTOR, "#contacts tr[data-contact]")))
    _wait(browser, ec.presence_of_element_located((By.CSS_SELECTOR, "#history table")))


def _contact_rows(browser) -> list[tuple[str, str]]:
    rows = browser.find_elements(By.CSS_SELECTOR, "#contacts tr[data-contact]")
    return [
        (
            r.find_elements(By.TAG_NAME, "td")[0].text,
            r.find_element(By.CSS_SELECTOR, "td.value").text,
        )
        for r in rows
    ]


def _click(browser, element) -> None:
    browser.execute_script(
        "arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", element
    )


def test_an_agent_follows_a_customer_from_search_to_unmerge(browser, console_server, story, shot):
    account, tokens = story["account"], story["tokens"]
    _sign_in(browser, console_server, account, tokens["agent"])
    _signed_in(browser)
    assert "agent" in browser.find_element(By.ID, "who-text").text
    # The key is in no storage the browser keeps.
    assert browser.execute_script("return document.cookie") == ""
    assert browser.execute_script("return localStorage.length + sessionStorage.length") == 0
    shot("01-signed-in")

    _search(browser, "phone", PHONE_1)
    assert browser.find_element(By.ID, "resolve-status").text.startswith("FOUND")
    rows = _contact_rows(browser)
    assert len(rows) == 5
    assert ("phone", "+15550100001") in rows and ("phone", PHONE_2) in rows
    graph = browser.find_element(By.ID, "graph")
    assert len(graph.find_elements(By.CSS_SELECTOR, "g.node")) == 5
    edges = graph.find_elements(By.CSS_SELECTOR, "g.edge")
    assert len(edges) >= 4
    shot("02-search-and-graph")

    crm_edge = next(e for e in edges if "crm/r1" in e.text)
    _click(browser, crm_edge)
    table = _wait(browser, ec.presence_of_element_located((By.ID, "edge-table")))
    cells = [td.text for td in table.find_elements(By.TAG_NAME, "td")]
    assert cells[:3] == ["crm", "r1", "2024-01-01 09:30:00Z"]
    shot("03-records-on-an-edge")

    # Markup in a stored contact value and in a label is text, never markup.
    values = [v for _, v in _contact_rows(browser)]
    assert MARKUP_VALUE in values
    labels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#label-chips .label-text")]
    assert MARKUP_LABEL in labels
    assert (
        browser.find_elements(By.CSS_SELECTOR, "#result img, #result script, #label-chips b") == []
    )
    assert browser.execute_script("return window.__xss === undefined")
    shot("04-markup-shown-as-text")

    # Why: the chain of records between the two phones runs through the manual merge.
    browser.find_element(By.CSS_SELECTOR, "#tabs button[data-tab=why]").click()
    contacts = [o.text for o in Select(browser.find_element(By.ID, "why-a-pick")).options]
    Select(browser.find_element(By.ID, "why-a-pick")).select_by_index(
        next(i for i, t in enumerate(contacts) if t.endswith("+15550100001"))
    )
    Select(browser.find_element(By.ID, "why-b-pick")).select_by_index(
        next(i for i, t in enumerate(contacts) if t.endswith(PHONE_2))
    )
    browser.find_element(By.ID, "why-submit").click()
    chain = _wait(browser, ec.presence_of_element_located((By.ID, "why-chain")))
    hops = [li.get_attribute("data-record") for li in chain.find_elements(By.TAG_NAME, "li")]
    assert f"manual/{story['manual_record']}" in hops and "crm/r1" in hops
    assert browser.find_element(By.ID, "why-verdict").text.startswith("linked")
    shot("05-why-these-are-one-customer")

    # Unmerge: the manual record's edge, its button, the confirmation, the split.
    browser.find_element(By.CSS_SELECTOR, "#tabs button[data-tab=search]").click()
    manual = browser.find_element(By.CSS_SELECTOR, "#graph g.edge.manual")
    _click(browser, manual)
    button = _wait(
        browser, ec.element_to_be_clickable((By.CSS_SELECTOR, "#edge-table button[data-unmerge]"))
    )
    assert button.text == "Unmerge"
    button.click()
    dialog = _wait(browser, ec.visibility_of_element_located((By.ID, "confirm")))
    changes = [li.text for li in dialog.find_elements(By.CSS_SELECTOR, "#confirm-changes li")]
    assert any(story["manual_record"] in c for c in changes)
    assert any("splits" in c for c in changes)
    shot("06-unmerge-confirmation")
    browser.find_element(By.ID, "confirm-ok").click()
    _wait(
        browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#contacts tr[data-contact]")) == 3
    )
    rows = _contact_rows(browser)
    assert ("phone", PHONE_2) not in rows and ("email", "bob@example.com") not in rows
    assert browser.find_elements(By.CSS_SELECTOR, "#graph g.edge.manual") == []
    history = browser.find_element(By.ID, "history").text.lower()
    assert "merged" in history
    shot("07-customer-split")
    browser.find_element(By.ID, "sign-out").click()
    _wait(browser, ec.visibility_of_element_located((By.ID, "sign-in-form")))


def test_a_reader_sees_masked_values(browser, console_server, story, shot):
    _sign_in(browser, console_server, story["account"], story["tokens"]["reader"])
    _signed_in(browser)
    _search(browser, "phone", PHONE_1)
    rows = dict(_contact_rows(browser))
    assert "*" in rows["phone"] and "*" in rows["email"]
    page = browser.find_element(By.TAG_NAME, "body").text
    assert "ann@example.com" not in page and "5550100001" not in page
    # Acting needs an agent: the tab and the buttons are not offered.
    assert not browser.find_element(By.CSS_SELECTOR, "#tabs button[data-tab=act]").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "button[data-policy]") == []
    assert browser.find_element(By.ID, "graph-note").is_displayed()
    shot("08-reader-sees-masked-values")
    browser.find_element(By.ID, "sign-out").click()


def test_an_interactive_key_signs_in_with_a_totp_code(browser, console_server, story, shot):
    account, tokens = story["account"], story["tokens"]
    keys = console_server.request(
        "GET", f"/v1/accounts/{account}/apiKeys", token=tokens["admin"]
    ).json["keys"]
    agent_id = next(k["keyId"] for k in keys if k["role"] == "ROLE_AGENT")
    enrolment = _ok(
        console_server.request(
            "POST",
            f"/v1/accounts/{account}/apiKeys/{agent_id}:setInteractive",
            {"interactive": True},
            token=tokens["admin"],
        )
    )
    _sign_in(browser, console_server, account, tokens["agent"])
    error = _wait(browser, lambda b: b.find_element(By.ID, "sign-in-error").text or None)
    assert "TOTP" in error
    shot("09-totp-required")
    code = pyotp.TOTP(pyotp.parse_uri(enrolment["otpauthUri"]).secret).now()
    _sign_in(browser, console_server, account, tokens["agent"], code)
    _signed_in(browser)
    assert "session until" in browser.find_element(By.ID, "who-text").text
    _search(browser, "phone", PHONE_1)
    assert "+15550100001" in dict(_contact_rows(browser)).values()
    shot("10-signed-in-with-totp")
    browser.find_element(By.ID, "sign-out").click()


def test_an_admin_enrols_a_key_and_sees_its_qr_code(browser, console_server, story, shot):
    account, tokens = story["account"], story["tokens"]
    _sign_in(browser, console_server, account, tokens["admin"])
    _signed_in(browser)
    browser.find_element(By.CSS_SELECTOR, "#tabs button[data-tab=review]").click()
    browser.find_element(By.ID, "keys-load").click()
    row = _wait(
        browser,
        lambda b: next(
            (
                r
                for r in b.find_elements(By.CSS_SELECTOR, "#keys tr[data-key]")
                if "reader" in r.text
            ),
            None,
        ),
    )
    row.find_element(By.TAG_NAME, "button").click()
    _wait(browser, ec.visibility_of_element_located((By.ID, "confirm")))
    browser.find_element(By.ID, "confirm-ok").click()
    image = _wait(browser, ec.visibility_of_element_located((By.ID, "enrol-qr")))
    _wait(browser, lambda b: b.execute_script("return arguments[0].naturalWidth", image) > 0)
    assert "otpauth://totp/" in browser.find_element(By.ID, "enrolment").text
    browser.find_element(By.ID, "isolated-load").click()
    _wait(browser, lambda b: b.find_element(By.ID, "isolated-result").text or None)
    shot("11-enrolment-qr-code")
    # Preview: at most two contacts a customer would split the three-contact customer.
    browser.find_element(By.ID, "preview-max-contacts").send_keys("2")
    browser.find_element(By.ID, "preview-submit").click()
    counts = _wait(browser, ec.visibility_of_element_located((By.ID, "preview-counts"))).text
    splits = int(counts.split(" would split")[0].rsplit(" ", 1)[1])
    assert splits >= 1, counts
    shot("12-preview-of-a-policy-change")
    browser.find_element(By.ID, "sign-out").click()


def test_the_console_is_served_with_a_strict_policy(console_server: HttpServer):
    page = console_server.request("GET", "/console/")
    assert page.status == 200
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "frame-ancestors 'none'" in policy
    assert "set-cookie" not in page.headers
    html = page.body.decode()
    assert "<script>" not in html and "style=" not in html and "onclick" not in html
    script = console_server.request("GET", "/console/app.js")
    assert script.status == 200 and script.headers["content-type"].startswith("text/javascript")
    source = script.body.decode()
    for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert forbidden not in source.replace("no innerHTML anywhere", "")
    assert "localStorage" not in source.replace("localStorage, sessionStorage", "")
    assert console_server.request("GET", "/console").status in (200, 301)
