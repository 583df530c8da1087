"""api_stack is a helper module of these tests: let pytest rewrite its asserts too."""

import pytest

pytest.register_assert_rewrite("api_stack")
