"""The error tree: one module holds it, the web layer alone knows HTTP codes."""

import inspect
import re

import pytest

from impasto import errors
from impasto.errors import ImpastoError


def _tree() -> list[type[ImpastoError]]:
    return [cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, ImpastoError)]


def test_every_error_is_defined_in_errors_exported_and_drawn():
    import impasto.catalog
    import impasto.config
    import impasto.service.farm.dispatcher
    import impasto.service.farm.worker
    import impasto.service.shop.app
    import impasto.service.shop.routes.admin
    import impasto.service.shop.routes.api
    import impasto.state  # noqa: F401 - every module that raises one is loaded

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    ours = {cls for cls in subclasses(ImpastoError) if cls.__module__.startswith("impasto")}
    assert {cls.__module__ for cls in ours} == {"impasto.errors"}
    assert set(errors.__all__) == {cls.__name__ for cls in _tree()}
    for cls in _tree():
        assert re.search(rf"^[ │├└─]*{cls.__name__}\b", errors.__doc__, re.M), cls


def test_domain_errors_carry_no_http_codes():
    assert [cls for cls in _tree() if "status_code" in vars(cls)] == []


@pytest.mark.parametrize(("error", "status"), [
    (errors.NotFound("x"), 404), (errors.NoSuchId("x"), 404), (errors.KeyNotFound("x"), 404),
    (errors.UploadTooLarge("x"), 413), (errors.CorruptImage("x"), 422), (errors.InvalidEmail("x"), 422),
    (errors.TooManyRequests("x", retry_after_seconds=1), 429), (errors.Unavailable("x"), 503),
    (errors.StorageError("x"), 400), (errors.ImpastoError("x"), 400), (errors.RenderDiverged("x"), 400),
])
def test_the_web_layer_maps_every_error_to_its_code_and_the_rest_to_a_4xx(error, status):
    from impasto.service.shop.routes.web import http_status

    assert http_status(error) == status
    for cls in _tree():
        code = http_status(cls.__new__(cls))
        assert 400 <= code < 500 or issubclass(cls, (errors.MailError, errors.FarmError, errors.Unavailable)), cls


def test_the_package_exports_the_errors_a_caller_of_the_engine_meets():
    import impasto

    for name in ("ImpastoError", "ImageError", "ParamError", "WeightsError", "OutputError",
                 "RenderDiverged", "RenderCancelled"):
        assert getattr(impasto, name) is getattr(errors, name) and name in impasto.__all__
