//! Concurrent requests never over-refund: SQLite's one writer or PostgreSQL's row locks
//! serialize them (the race runs on both), and SQLite's guard triggers would refuse an
//! over-refund even if the service layer let one through (PostgreSQL's: `postgresql`).

use crate::support::{
    Backend, TestDatabase, TestLedger, TestServer, client, element_text, on_both_backends, post,
    soap11, soap11_headers,
};

on_both_backends!(fifty_parallel_adds_never_exceed_what_was_paid, multi_thread);
async fn fifty_parallel_adds_never_exceed_what_was_paid(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    let server = TestServer::start_with(ledger.config()).await;
    let http = client();
    let url = format!("{}/soap/refunds", server.base);
    // Order 2001 was paid 250.00 (200.00 by payment 11, which can refund automatically, and
    // 50.00 by transfer). 25 automatic and 25 manual refunds of 10.00 each ask for 500.00.
    let requests = (0..50).map(|index| {
        let (operation, params) = if index % 2 == 0 {
            ("addAutomaticRefundForOrder", "<r:sourceId>2001</r:sourceId><r:paymentId>11</r:paymentId><r:refundValue>10.00</r:refundValue><r:refundCurrency>PLN</r:refundCurrency>")
        } else {
            ("addManualRefund", "<r:sourceType>order</r:sourceType><r:sourceId>2001</r:sourceId><r:refundValue>10.00</r:refundValue><r:refundCurrency>PLN</r:refundCurrency><r:refundDetails><r:paymentFormId>1</r:paymentFormId></r:refundDetails>")
        };
        let http = http.clone();
        let url = url.clone();
        tokio::spawn(async move { post(&http, &url, &soap11_headers(operation), soap11(operation, params)).await })
    });
    let mut accepted = 0;
    let mut refused = 0;
    for request in requests.collect::<Vec<_>>() {
        let answer = request.await.expect("request task");
        assert_eq!(answer.status, 200);
        match element_text(&answer.body, "faultCode") {
            Some("0") => accepted += 1,
            Some("4003") => refused += 1,
            other => panic!("unexpected outcome {other:?}: {}", answer.body),
        }
    }
    server.stop().await;
    assert_eq!(
        (accepted, refused),
        (25, 25),
        "exactly the paid 250.00 is reserved"
    );

    let paid = ledger.count("SELECT paid_minor FROM orders WHERE id = 2001");
    let refunded = ledger.count("SELECT refunded_minor FROM orders WHERE id = 2001");
    assert_eq!((paid, refunded), (25_000, 25_000));
    let live_sum = ledger.count("SELECT coalesce(sum(amount_minor), 0) FROM refunds WHERE order_id = 2001 AND status IN ('New','Processing','Completed')");
    assert_eq!(
        live_sum, refunded,
        "the running total equals the refunds' sum"
    );
    let payment_amount = ledger.count("SELECT amount_minor FROM payments WHERE id = 11");
    let payment_refunded = ledger.count("SELECT refunded_minor FROM payments WHERE id = 11");
    assert!(payment_refunded <= payment_amount);
    let automatic_sum = ledger.count("SELECT coalesce(sum(amount_minor), 0) FROM refunds WHERE payment_id = 11 AND status IN ('New','Processing','Completed')");
    assert_eq!(automatic_sum, payment_refunded);
    crate::support::assert_ledger_consistent(&ledger);
    // PostgreSQL keeps the count in shards; their sum is the count.
    let new_for_orders = ledger.count(
        "SELECT coalesce(sum(n), 0) FROM refund_counts WHERE source_type = 'order' AND status = 'New'",
    );
    assert_eq!(new_for_orders, 25, "the 25 accepted refunds are counted");
}

/// Asserts that the ledger refused a statement, with `reason` in SQLite's message: a
/// constraint or trigger, not some other failure.
fn refused(outcome: rusqlite::Result<usize>, reason: &str, what: &str) {
    match outcome {
        Err(error) => assert!(error.to_string().contains(reason), "{what}: {error}"),
        Ok(_) => panic!("{what}: accepted"),
    }
}

#[test]
fn the_ledger_itself_refuses_an_over_refund() {
    // Bypass the service: the guard triggers and CHECK constraints must still hold.
    let database = TestDatabase::with_test_shop();
    let connection = rusqlite::Connection::open(&database.path).expect("open ledger");
    connection
        .execute("INSERT INTO movements (kind) VALUES ('refund')", [])
        .expect("id");
    let id = connection.last_insert_rowid();
    let over = connection.execute(
        "INSERT INTO refunds (id, order_id, source_type, source_id, method, payment_id, amount_minor, currency, status, created_at, created_by)
         VALUES (?1, 2001, 'order', 2001, 'automatic', 11, 20001, 'PLN', 'New', 0, 'sql')",
        [id],
    );
    refused(
        over,
        "CHECK constraint failed",
        "a refund above the payment's 200.00 is refused by the ledger",
    );
    let wrong_currency = connection.execute(
        "INSERT INTO refunds (id, order_id, source_type, source_id, method, payment_id, amount_minor, currency, status, created_at, created_by)
         VALUES (?1, 2001, 'order', 2001, 'automatic', 11, 100, 'EUR', 'New', 0, 'sql')",
        [id],
    );
    refused(
        wrong_currency,
        "refund currency differs from its order",
        "a refund in another currency than its order is refused",
    );
    let fits = connection.execute(
        "INSERT INTO refunds (id, order_id, source_type, source_id, method, payment_id, amount_minor, currency, status, created_at, created_by)
         VALUES (?1, 2001, 'order', 2001, 'automatic', 11, 20000, 'PLN', 'New', 0, 'sql')",
        [id],
    );
    assert!(fits.is_ok(), "{fits:?}");
    let raise = connection.execute(
        "UPDATE refunds SET amount_minor = 20001 WHERE id = ?1",
        [id],
    );
    refused(
        raise,
        "CHECK constraint failed",
        "raising it above the payment is refused",
    );
    let delete = connection.execute("DELETE FROM refunds WHERE id = ?1", [id]);
    refused(delete, "refunds are never deleted", "deleting a refund");

    // The reservation follows the status: live (New, Processing, Completed) holds the amount,
    // Canceled releases it, and a final state never changes again.
    let totals = || -> (i64, i64) {
        connection
            .query_row(
                "SELECT (SELECT refunded_minor FROM orders WHERE id = 2001),
                        (SELECT refunded_minor FROM payments WHERE id = 11)",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .expect("totals")
    };
    let held = totals();
    connection
        .execute(
            "UPDATE refunds SET status = 'Processing' WHERE id = ?1",
            [id],
        )
        .expect("approve");
    assert_eq!(totals(), held, "a Processing refund still holds its amount");
    connection
        .execute(
            "UPDATE refunds SET status = 'Completed' WHERE id = ?1",
            [id],
        )
        .expect("settle");
    assert_eq!(totals(), held, "a Completed refund still holds its amount");
    for (status, amount) in [("New", 20000), ("Canceled", 20000), ("Completed", 100)] {
        let change = connection.execute(
            "UPDATE refunds SET status = ?2, amount_minor = ?3 WHERE id = ?1",
            rusqlite::params![id, status, amount],
        );
        refused(
            change,
            "a refund in a final state does not change",
            &format!("a Completed refund stays as it is ({status}, {amount})"),
        );
    }

    connection
        .execute("INSERT INTO movements (kind) VALUES ('refund')", [])
        .expect("id");
    let second = connection.last_insert_rowid();
    connection
        .execute(
            "INSERT INTO refunds (id, order_id, source_type, source_id, method, payment_form_id, amount_minor, currency, status, created_at, created_by)
             VALUES (?1, 2001, 'order', 2001, 'manual', 2, 3000, 'PLN', 'New', 0, 'sql')",
            [second],
        )
        .expect("a manual refund within what is left");
    assert_eq!(
        totals(),
        (held.0 + 3000, held.1),
        "a manual refund holds the order only"
    );
    connection
        .execute(
            "UPDATE refunds SET status = 'Canceled' WHERE id = ?1",
            [second],
        )
        .expect("cancel");
    assert_eq!(totals(), held, "canceling releases the amount");
    let revive = connection.execute("UPDATE refunds SET status = 'New' WHERE id = ?1", [second]);
    refused(
        revive,
        "a refund in a final state does not change",
        "a Canceled refund stays canceled",
    );
}
