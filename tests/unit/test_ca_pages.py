"""The CA's pages read back by the project's certsrv page parser (the client side), and carrying
the exact strings of the certsrv notes; the IIS W3C line format."""

from __future__ import annotations

import datetime as dt
import re

from onlineca.config import TemplateConfig
from onlineca.logs.iis import FIELDS, IISEntry, format_line, header_lines
from onlineca.proto.certsrv import client, hresults as hr, server as pages

CA = "Lab Issuing CA"


def test_certrqxt_lists_templates_the_client_reads():
    page = pages.certrqxt(CA, [TemplateConfig(name="CiscoRA", display_name="Cisco RA"),
                               TemplateConfig(name="Odd&<Name>")])
    got = client.parse_templates(page)
    assert [(t.name, t.display_name) for t in got] == [("CiscoRA", "Cisco RA"), ("Odd&<Name>", "Odd&<Name>")]
    assert client.parse_templates(pages.certrqxt(CA, [])) == []
    assert "(No templates found!)" in pages.certrqxt(CA, [])


def test_issued_pending_denied_pages():
    issued = pages.issued(CA, 10, browser=True)
    assert "certnew.cer?ReqID=10&amp;Enc=b64" in issued
    assert 'location="certnew.cer?ReqID=10&"+getEncoding();' in issued
    assert "getEncoding" not in pages.issued(CA, 10, browser=False)
    assert client.parse_certfnsh(issued) == client.IssuedPage(10)
    assert client.parse_certfnsh(pages.pending(CA, 42)) == client.Pending(42, "Taken Under Submission")
    message = hr.policy_denial(hr.CERTSRV_E_TEMPLATE_DENIED, 'The "quoted" <template> text.')
    page = pages.denied(CA, 43, message)
    assert re.search(r'The disposition message is "Denied by Policy Module  0x80094012, The &quot;quoted', page)
    denied = client.parse_certfnsh(page)
    assert (denied.req_id, denied.hresult) == (43, hr.CERTSRV_E_TEMPLATE_DENIED)


def test_error_page_value_on_the_line_after_its_label_with_two_tabs():
    page = pages.error(CA, "denied", "Denied by Policy Module  0x80094800, text\r\n",
                       hr.HRESULT_TEXT[hr.CRYPT_E_NOT_FOUND])
    assert re.search("Disposition message:[^\t]+\t\t([^\r\n]+)", page).group(1) == (
        "Denied by Policy Module 0x80094800, text")
    got = client.parse_error_page(page, 7)
    assert isinstance(got, client.Denied) and got.hresult == hr.CRYPT_E_NOT_FOUND
    pending = pages.error(CA, "pending", "Taken Under Submission", hr.HRESULT_TEXT[hr.S_OK])
    assert client.parse_error_page(pending, 8) == client.Pending(8, "Taken Under Submission")


def test_certcarc_and_certckpn():
    assert client.parse_certcarc(pages.certcarc(CA, 0)) == 0
    at = dt.datetime(2026, 1, 2, 3, 4, 5)
    assert client.parse_certckpn(pages.certckpn(CA, [(42, at), (45, None)])) == [42, 45]
    assert client.parse_certckpn(pages.certckpn(CA, [])) == []


def test_iis_line_in_the_document_format_then_the_request_id_custom_field():
    e = IISEntry(when=dt.datetime(2019, 3, 5, 17, 31, 15), s_ip="14.48.31.152", method="GET", uri_stem="/certsrv",
                 uri_query="", s_port=443, username="", c_ip="14.48.31.128", user_agent="CiscoRA 1.0",
                 referer="", status=401, substatus=1, win32_status=2148074254, time_taken_ms=0)
    # The document's fields, then X-Request-ID as IIS 8.5+ logs a request header ("-" when absent).
    assert format_line(e) == ("2019-03-05 17:31:15 14.48.31.152 GET /certsrv - 443 - 14.48.31.128 CiscoRA+1.0 - "
                              "401 1 2148074254 0 -")
    hostile = IISEntry(when=e.when, s_ip="::1", method="GET", uri_stem="/certsrv", uri_query="a=b c",
                       s_port=443, username="MICHAMEN\\ciscora", c_ip="::1", user_agent="x\r\ny\tz",
                       referer="r e", status=200, request_id="id with spaces")
    fields = format_line(hostile).split(" ")
    assert len(fields) == 16 and fields[5] == "a=b+c" and fields[9] == "xyz" and fields[10] == "r+e"
    assert fields[15] == "-"  # a request id that is not clean is not logged
    assert header_lines(e.when)[2:] == ["#Date: 2019-03-05 17:31:15", f"#Fields: {FIELDS}"]
