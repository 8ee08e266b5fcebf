"""Client-chosen strings: model names as directory names, bounded and escaped echoes."""

from __future__ import annotations

import pytest

from server.client_strings import MAX_MODEL_NAME_BYTES, check_client_string, check_model_name, shown
from server.errors import ServerError
from server.frontends.grpc.status import MAX_STATUS_MESSAGE_CHARS, status_details


def refusal(call: object) -> str:
    with pytest.raises(ServerError) as caught:
        call()  # type: ignore[operator]
    return caught.value.message


@pytest.mark.parametrize("name", ["resnet50", "fraud-v2_b", "日本語モデル", "a" * 85 + "é" * 85])
def test_good_model_names_pass(name: str) -> None:
    check_model_name(name)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "must not be empty or blank"),
        ("   ", "must not be empty or blank"),
        ("..", "plain directory name"),
        ("../alpha", "plain directory name"),
        ("a/b", "plain directory name"),
        ("a\\b", "plain directory name"),
        (".hidden", "plain directory name"),
        ("evil\nmodel 'x': READY", "control or formatting characters"),
        ("abc\u202egpj.exe", "control or formatting characters"),
        ("nul\x00byte", "control or formatting characters"),
        ("é" * 128, f"at most {MAX_MODEL_NAME_BYTES} bytes"),
    ],
)
def test_bad_model_names_are_refused(name: str, problem: str) -> None:
    message = refusal(lambda: check_model_name(name))
    assert message.startswith("invalid model name ") and problem in message
    assert "\n" not in message and "\u202e" not in message and "\x00" not in message


def test_long_strings_are_shown_bounded_and_escaped() -> None:
    text = shown("x\n" * 100_000)
    assert len(text) < 200 and text.startswith("'x\\nx\\n") and text.endswith("more characters)")


def test_a_huge_request_id_is_refused_without_echoing_it() -> None:
    message = refusal(lambda: check_client_string("request id", "r" * 1_000_000, 256))
    assert len(message) < 200 and "longer than 256 characters" in message


def test_grpc_status_details_are_capped() -> None:
    assert status_details("short") == "short"
    capped = status_details("e" * 100_000)
    assert len(capped) <= MAX_STATUS_MESSAGE_CHARS and capped.endswith("more characters)")
