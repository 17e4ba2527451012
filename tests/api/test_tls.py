"""TLS through hypercorn with uvicorn's (vLLM's) context: HTTPS and WSS with the unmodified openai SDK
against certificates the test makes (trustme), client-certificate requirement, cipher choice, ALPN, and
the start-up errors for settings that cannot work."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import attrs
import httpx2
import pytest
import trio
import trustme
from cryptography.hazmat.primitives import serialization
from openai import APIConnectionError, OpenAI

from trio_front.engine.mock import eos_seed
from trio_front.listen import hypercorn_config
from trio_front.server import FrontendConfig

from .conftest import MODEL
from .listen_fixtures import Listening, listening

PROMPT = [1, 50, 60, 70]


@attrs.frozen
class PKI:
    """A test CA, the server's certificate (127.0.0.1 and localhost) and two client certificates: one from
    the CA, one from a CA the server does not trust."""

    ca: trustme.CA
    ca_file: str
    certfile: str
    keyfile: str
    combined_file: str  # key and certificate chain in one PEM, as uvicorn accepts with no --ssl-keyfile
    client: trustme.LeafCert
    stranger: trustme.LeafCert

    def client_context(self, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if cert is not None:
            cert.configure_cert(context)
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    for blob in server.cert_chain_pems[1:]:
        blob.write_to_path(str(root / "cert.pem"), append=True)
    server.private_key_pem.write_to_path(str(root / "key.pem"))
    server.private_key_and_cert_chain_pem.write_to_path(str(root / "combined.pem"))
    return PKI(
        ca=ca,
        ca_file=str(root / "ca.pem"),
        certfile=str(root / "cert.pem"),
        keyfile=str(root / "key.pem"),
        combined_file=str(root / "combined.pem"),
        client=ca.issue_cert("client@example.com"),
        stranger=trustme.CA().issue_cert("client@example.com"),
    )


def tls(pki: PKI, **extra: Any) -> dict[str, Any]:
    return {"ssl_certfile": pki.certfile, "ssl_keyfile": pki.keyfile, **extra}


def sdk_https_and_wss(server: Listening, context: ssl.SSLContext) -> dict[str, Any]:
    """Runs in a worker thread: the unmodified sync SDK over HTTPS (plain and streamed) and WSS."""
    ws_url = server.url.replace("https://", "wss://")
    client = OpenAI(
        api_key="unused",
        base_url=f"{server.url}/v1",
        websocket_base_url=f"{ws_url}/v1",
        http_client=httpx2.Client(verify=context),
        max_retries=0,
    )
    out: dict[str, Any] = {}
    out["completion"] = client.completions.create(model=MODEL.name, prompt=PROMPT, max_tokens=8)
    out["stream"] = list(
        client.completions.create(model=MODEL.name, prompt=PROMPT, max_tokens=8, stream=True)
    )
    # The SDK passes these options to websockets' connect(); `ssl` is its TLS context.
    options: Any = {"ssl": context}
    with client.realtime.connect(model=MODEL.name, websocket_connection_options=options) as conn:
        out["created"] = conn.recv()
        conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "seed": eos_seed(4)})
        conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
        )
        conn.response.create()
        deltas = []
        for event in conn:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            elif event.type == "response.done":
                out["done"], out["deltas"] = event, deltas
                break
    return out


async def test_https_and_wss_with_the_openai_sdk(pki: PKI) -> None:
    async with listening(tls(pki)) as server:
        assert server.url.startswith("https://127.0.0.1:")
        out = await trio.to_thread.run_sync(sdk_https_and_wss, server, pki.client_context())
        expected = server.expected_text(PROMPT, 8)
        assert out["completion"].choices[0].text == expected
        assert out["completion"].usage.completion_tokens == 8
        assert "".join(c.choices[0].text for c in out["stream"]) == expected
        assert out["created"].type == "session.created"
        done = out["done"].response
        assert done.status == "completed"
        assert done.usage.output_tokens == 5  # four tokens, then EOS
        assert "".join(out["deltas"]) == done.output[0].content[0].text != ""


def sdk_completion(url: str, context: ssl.SSLContext | bool) -> str:
    client = OpenAI(
        api_key="unused", base_url=f"{url}/v1", http_client=httpx2.Client(verify=context), max_retries=0
    )
    return client.completions.create(model=MODEL.name, prompt=PROMPT, max_tokens=3).choices[0].text


async def test_an_untrusted_server_certificate_is_refused_by_the_sdk(pki: PKI) -> None:
    """The certificate really is checked: the SDK with the system's CAs only refuses to talk."""
    async with listening(tls(pki)) as server:
        with pytest.raises(APIConnectionError):
            await trio.to_thread.run_sync(sdk_completion, server.url, True)
        assert server.mock.log.named("add") == []


async def test_a_combined_pem_needs_no_keyfile(pki: PKI) -> None:
    async with listening({"ssl_certfile": pki.combined_file}) as server:
        text = await trio.to_thread.run_sync(sdk_completion, server.url, pki.client_context())
        assert text == server.expected_text(PROMPT, 3)


async def test_client_certificate_required(pki: PKI) -> None:
    """ssl_cert_reqs=2 with a CA: no client certificate or one from another CA → the TLS handshake fails
    (with TLS 1.3 the client learns it on its first read) and nothing reaches the app; the CA's → works."""
    async with listening(tls(pki, ssl_cert_reqs=2, ssl_ca_certs=pki.ca_file)) as server:
        for cert in (None, pki.stranger):
            with pytest.raises(APIConnectionError):
                await trio.to_thread.run_sync(sdk_completion, server.url, pki.client_context(cert))
        assert server.mock.log.named("add") == []
        text = await trio.to_thread.run_sync(sdk_completion, server.url, pki.client_context(pki.client))
        assert text == server.expected_text(PROMPT, 3)
        assert len(server.mock.log.named("add")) == 1


async def test_client_certificate_optional(pki: PKI) -> None:
    """ssl_cert_reqs=1: no certificate is fine, but one that does not verify is refused."""
    async with listening(tls(pki, ssl_cert_reqs=1, ssl_ca_certs=pki.ca_file)) as server:
        assert await trio.to_thread.run_sync(sdk_completion, server.url, pki.client_context())
        with pytest.raises(APIConnectionError):
            await trio.to_thread.run_sync(sdk_completion, server.url, pki.client_context(pki.stranger))


async def handshake(server: Listening, context: ssl.SSLContext) -> trio.SSLStream[trio.SocketStream]:
    port = int(server.url.rsplit(":", 1)[1])
    stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=context)
    with trio.fail_after(10):
        await stream.do_handshake()
    return stream


def tls12(pki: PKI, ciphers: str) -> ssl.SSLContext:
    context = pki.client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # ciphers only choose below TLS 1.3
    context.set_ciphers(ciphers)
    return context


async def test_uvicorn_context_not_hypercorns(pki: PKI) -> None:
    """ALPN offers http/1.1 only (hypercorn's own would pick h2), TLS 1.3 by default, and the default
    ciphers are Python's (uvicorn's), wider than hypercorn's ECDHE+AESGCM: ChaCha20 at TLS 1.2 works."""
    async with listening(tls(pki)) as server:
        context = pki.client_context()
        context.set_alpn_protocols(["h2", "http/1.1"])
        stream = await handshake(server, context)
        assert stream.selected_alpn_protocol() == "http/1.1"
        assert stream.version() == "TLSv1.3"
        await stream.aclose()

        stream = await handshake(server, tls12(pki, "ECDHE-ECDSA-CHACHA20-POLY1305"))
        assert stream.version() == "TLSv1.2" and stream.cipher()[0] == "ECDHE-ECDSA-CHACHA20-POLY1305"
        await stream.aclose()


async def test_ssl_ciphers_is_honoured(pki: PKI) -> None:
    async with listening(tls(pki, ssl_ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")) as server:
        stream = await handshake(
            server, tls12(pki, "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305")
        )
        assert stream.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"
        await stream.aclose()
        with pytest.raises(trio.BrokenResourceError):
            await handshake(server, tls12(pki, "ECDHE-ECDSA-CHACHA20-POLY1305"))


def encrypted_key(pki: PKI, path: Path) -> str:
    key = serialization.load_pem_private_key(Path(pki.keyfile).read_bytes(), password=None)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return str(path)


def check(**fields: Any) -> None:
    hypercorn_config(FrontendConfig(engine_addr="ipc:///unused", model=MODEL, **fields))


def test_start_up_errors_name_the_flag(pki: PKI, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"ssl_keyfile": pki.keyfile}, "--ssl-keyfile given without --ssl-certfile"),
        ({"ssl_ca_certs": pki.ca_file}, "--ssl-ca-certs given without --ssl-certfile"),
        ({"ssl_cert_reqs": 2}, "--ssl-cert-reqs given without --ssl-certfile"),
        ({"ssl_ciphers": "ECDHE+AESGCM"}, "--ssl-ciphers given without --ssl-certfile"),
        (tls(pki, ssl_cert_reqs=7), "--ssl-cert-reqs 7: must be 0"),
        (tls(pki, ssl_cert_reqs=2), "--ssl-cert-reqs 2 needs --ssl-ca-certs"),
        ({"ssl_certfile": missing, "ssl_keyfile": pki.keyfile}, f"--ssl-certfile {missing}: no such file"),
        ({"ssl_certfile": pki.certfile, "ssl_keyfile": missing}, f"--ssl-keyfile {missing}: no such file"),
        (tls(pki, ssl_cert_reqs=2, ssl_ca_certs=missing), f"--ssl-ca-certs {missing}: no such file"),
        ({"ssl_certfile": pki.certfile}, "--ssl-certfile (no --ssl-keyfile): cannot load"),  # no key in it
        ({"ssl_certfile": pki.keyfile, "ssl_keyfile": pki.certfile}, "--ssl-certfile/--ssl-keyfile: cannot"),
        (tls(pki, ssl_keyfile=encrypted_key(pki, tmp_path / "enc.pem")), "the key is encrypted"),
        (tls(pki, ssl_ca_certs=pki.keyfile), f"--ssl-ca-certs {pki.keyfile}: cannot load"),
        (tls(pki, ssl_ciphers="NO-SUCH-CIPHER"), "--ssl-ciphers 'NO-SUCH-CIPHER'"),
    ]
    for fields, message in cases:
        with pytest.raises(ValueError) as error:
            check(**fields)
        assert message in str(error.value), (fields, str(error.value))
    check(**tls(pki))  # and the good configuration passes
