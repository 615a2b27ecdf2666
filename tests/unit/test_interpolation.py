"""``${VAR}`` interpolation, as a table: template, environment, result or error."""

from __future__ import annotations

import pytest

from reconciler.model.interpolation import InterpolationError, interpolate, interpolate_string
from reconciler.model.yaml_lines import load_yaml

ENV = {"SET": "value", "EMPTY": "", "PORT": "8080", "B": "bee"}

# (template, expected result)
FILLED = [
    ("plain text", "plain text"),
    ("", ""),
    ("$SET", "value"),
    ("${SET}", "value"),
    ("pre-${SET}-post", "pre-value-post"),
    ("$SET/$PORT", "value/8080"),
    ("${PORT}:80", "8080:80"),
    ("$$", "$"),
    ("pa$$word", "pa$word"),
    ("$${SET}", "${SET}"),
    ("${EMPTY}", ""),
    ("${UNSET:-default}", "default"),
    ("${EMPTY:-default}", "default"),
    ("${SET:-default}", "value"),
    ("${UNSET-default}", "default"),
    ("${EMPTY-default}", ""),
    ("${SET-default}", "value"),
    ("${UNSET:-}", ""),
    ("${UNSET-}", ""),
    ("${UNSET:-with spaces and : colons}", "with spaces and : colons"),
    ("${UNSET:-$$literal}", "$literal"),
    ("${SET:?must be set}", "value"),
    ("${EMPTY?may be empty}", ""),
    ("${SET:+alt}", "alt"),
    ("${EMPTY:+alt}", ""),
    ("${UNSET:+alt}", ""),
    ("${SET+alt}", "alt"),
    ("${EMPTY+alt}", "alt"),
    ("${UNSET+alt}", ""),
    # Nested: only the branch that is used is expanded.
    ("${UNSET:-${B}}", "bee"),
    ("${UNSET:-${ALSO_UNSET:-deep}}", "deep"),
    ("${SET:-${ALSO_UNSET}}", "value"),
    ("${SET:+${B}-x}", "bee-x"),
    ("${UNSET:-a${B}c}", "abeec"),
    ("${SET:?${ALSO_UNSET}}", "value"),
    ("${SET}}", "value}"),
    ("a}b", "a}b"),
]

# (template, expected error message)
REFUSED = [
    (
        "${UNSET}",
        "variable UNSET is not set (set it in the env file on the VM, "
        "/etc/reconciler/reconciler.env, or give a default with ${UNSET:-...})",
    ),
    ("$UNSET", "variable UNSET is not set"),
    ("x-${UNSET:-${ALSO_UNSET}}", "variable ALSO_UNSET is not set"),
    (
        "${UNSET:?set it in reconciler.env}",
        "variable UNSET is not set or empty: set it in reconciler.env",
    ),
    ("${EMPTY:?}", "variable EMPTY is not set or empty"),
    ("${UNSET?}", "variable UNSET is not set"),
    ("$", "invalid '$' at character 1"),
    ("price: 5$", "invalid '$' at character 9"),
    ("$1", "invalid '$' at character 1"),
    ("${", "invalid '${' at character 1"),
    ("${SET", "unclosed '${'"),
    ("${UNSET:-default", "unclosed '${'"),
    ("${SET:-default", "unclosed '${'"),
    ("${1X}", "invalid '${' at character 1: expected a variable name"),
    ("${SET!}", "invalid '${SET' at character 1: expected '}' or one of"),
]


@pytest.mark.parametrize(("template", "expected"), FILLED)
def test_templates_are_filled_from_the_environment(template: str, expected: str) -> None:
    assert interpolate_string(template, ENV) == expected


@pytest.mark.parametrize(("template", "message"), REFUSED)
def test_bad_or_unset_templates_are_errors(template: str, message: str) -> None:
    with pytest.raises(InterpolationError) as caught:
        interpolate_string(template, ENV)
    assert message in str(caught.value)


def test_messages_never_contain_values() -> None:
    secret = {"PW": "hunter2-secret"}
    for template in ("${PW:?no}${MISSING}", "${PW}$", "${PW:+${MISSING}}", "${PW"):
        with pytest.raises(InterpolationError) as caught:
            interpolate_string(template, secret)
        assert "hunter2" not in str(caught.value)


def test_the_tree_is_filled_in_values_not_keys_nor_extensions() -> None:
    text = (
        "x-unused: ${NOT_SET}\n"
        "services:\n"
        "  web:\n"
        "    image: nginx:${TAG:-1}\n"
        "    environment:\n"
        "      ${KEY}: ${SET}\n"
        "      LIST: [1, true]\n"
        "    command: [echo, $SET, $MISSING]\n"
    )
    data, line_map = load_yaml(text, path="compose.yaml")
    result, issues = interpolate(data, ENV, line_map=line_map)
    assert result == {
        "x-unused": "${NOT_SET}",
        "services": {
            "web": {
                "image": "nginx:1",
                "environment": {"${KEY}": "value", "LIST": [1, True]},
                "command": ["echo", "value", ""],
            }
        },
    }
    assert [str(i) for i in issues] == [
        "compose.yaml:8: services.web.command[2]: variable MISSING is not set (set it in the "
        "env file on the VM, /etc/reconciler/reconciler.env, or give a default with "
        "${MISSING:-...})"
    ]
