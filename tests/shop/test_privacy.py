""""Delete my photo now" through the pages, the API and the emails' link; what the privacy page promises."""

from __future__ import annotations

from sqlalchemy import select

from impasto.service.core import orders
from impasto.service.core.models import JobKind, Order, OrderStatus, Portrait
from support.shop import CSRF, FORM_ADDRESS, count_rows, csrf_token, finish_jobs, new_portrait, nothing_stored, stored_files


def order_print(client, shop, portrait: dict) -> str:
    token = csrf_token(client)
    preview = portrait["previews"][0]["id"]
    response = client.post(f"/portraits/{portrait['id']}/orders", data={
        "csrf_token": token, "preview_id": str(preview), "print_size": "1x1in", **FORM_ADDRESS},
        follow_redirects=False)
    assert response.status_code == 303, response.text
    return response.headers["location"].rsplit("/", 1)[1]


def test_the_portrait_page_links_to_a_confirmation_that_deletes_everything(web):
    client, shop = web
    portrait = new_portrait(client, shop)
    page = client.get(f"/portraits/{portrait['id']}")
    assert f'href="/portraits/{portrait["id"]}/delete"' in page.text
    confirm = client.get(f"/portraits/{portrait['id']}/delete")
    assert confirm.status_code == 200 and "Delete my photo now" in confirm.text
    assert stored_files(shop)                                 # the photo and the previews, before
    refused = client.post(f"/portraits/{portrait['id']}/delete", data={"csrf_token": "forged"})
    assert refused.status_code == 403 and count_rows(shop, Portrait) == 1
    token = CSRF.search(confirm.text).group(1)
    done = client.post(f"/portraits/{portrait['id']}/delete", data={"csrf_token": token})
    assert done.status_code == 200 and "Your photo is deleted" in done.text
    assert nothing_stored(shop)
    assert client.get(f"/portraits/{portrait['id']}").status_code == 404
    assert client.get(f"/api/v1/portraits/{portrait['id']}").status_code == 404


def test_a_print_under_way_keeps_the_photo_until_it_has_shipped(web):
    client, shop = web
    portrait = new_portrait(client, shop)
    number = order_print(client, shop, portrait)
    confirm = client.get(f"/portraits/{portrait['id']}/delete")
    assert "still being made" in confirm.text and number in confirm.text and 'method="post"' not in confirm.text
    token = csrf_token(client)
    refused = client.post(f"/portraits/{portrait['id']}/delete", data={"csrf_token": token})
    assert refused.status_code == 409 and "still being made" in refused.text
    assert client.delete(f"/api/v1/portraits/{portrait['id']}").status_code == 409
    assert count_rows(shop, Portrait) == 1

    finish_jobs(shop, JobKind.PRINT)                          # the print: ready, printed, shipped
    with shop.sessions() as session:
        order = session.scalars(select(Order).where(Order.number == number)).one()
        for status in (OrderStatus.PRINTED, OrderStatus.SHIPPED):
            orders.set_order_status(session=session, order_id=order.id, status=status)
        session.commit()
    assert client.delete(f"/api/v1/portraits/{portrait['id']}").status_code == 204
    assert nothing_stored(shop) and count_rows(shop, Order) == 0, stored_files(shop)
    assert client.delete(f"/api/v1/portraits/{portrait['id']}").status_code == 404


def test_the_emails_carry_the_delete_link_and_the_privacy_page_the_delay(web):
    from impasto.service.shop.mail import Mailer

    client, shop = web
    privacy = client.get("/privacy").text
    assert f"deleted {shop.settings.retention_days} days after your upload" in privacy
    assert "after the print has shipped" in privacy
    mailer = Mailer("smtp://127.0.0.1:25", sender="impasto <shop@example.com>")
    for template, extra in (("previews_ready", {"portrait_url": "https://shop.example/portraits/abc"}),
                            ("print_ready", {"download_url": "https://shop.example/d", "order": "IMP-AAAA-BBBB"})):
        message = mailer.compose(template, to="ada@example.com", delete_url="https://shop.example/portraits/abc/delete",
                                 retention_days=30, **extra)
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert "To delete it now: https://shop.example/portraits/abc/delete" in text
        assert 'href="https://shop.example/portraits/abc/delete"' in html and "Delete my photo now" in html
