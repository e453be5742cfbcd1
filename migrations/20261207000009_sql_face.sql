-- The SQL face of the sync ledger: what a host in any language calls, in
-- its own transaction, and what the Rust client calls too (one
-- implementation, not two that drift; workflows' ledger module wraps these
-- functions in typed Rust):
--
--   ledgerflow.on_host_trigger(tenant, trigger, snapshot, label, action_override)
--   ledgerflow.record_trigger(connection_id, trigger, snapshot, label, action_override)
--   ledgerflow.sync_dialog(connection_id, invoice_id, history_limit)
--   ledgerflow.sync_history(connection_id, invoice_id, before, history_limit)
--   ledgerflow.resync_now / send_as_new / retry_failed_event / set_invoice_auto_sync
--   ledgerflow.check_snapshot(snapshot)
--   ledgerflow.approve_invoices / withdraw_approval / sync_approved ("approve
--   before sync": migration 20261207000019_approvals.sql)
--
-- The trigger rules (snapshot checks, settings, skip reasons, superseding,
-- the chain a sync becomes) live here, and only here.
--
-- Errors are raised with a JSON DETAIL ({"kind": ...}) the Rust client maps
-- to its typed LedgerError: 22023 a bad argument (a snapshot naming the
-- field and the problem, an unknown trigger), P0002 something that does
-- not exist, 55000 an action not allowed now. Nothing is written when one
-- is raised (the statement, and so the host's transaction, is aborted).

CREATE FUNCTION ledgerflow.face_error(p_code text, p_message text, p_detail jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = p_code, MESSAGE = p_message, DETAIL = p_detail::text;
END;
$$;

-- ---------------------------------------------------------------------
-- Values as the Rust domain writes them (messages must read the same).
-- Functions that cast text to dates or times are STABLE, not IMMUTABLE:
-- PostgreSQL's casts depend on settings, even where these inputs do not.
-- ---------------------------------------------------------------------

-- money.rs's currency table: code and minor-unit exponent.
CREATE FUNCTION ledgerflow.currency_exponent(p_code text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT e FROM (VALUES
        ('AED', 2), ('ARS', 2), ('AUD', 2), ('BDT', 2), ('BGN', 2), ('BHD', 3),
        ('BRL', 2), ('CAD', 2), ('CHF', 2), ('CLP', 0), ('CNY', 2), ('COP', 2),
        ('CZK', 2), ('DKK', 2), ('EGP', 2), ('EUR', 2), ('FJD', 2), ('GBP', 2),
        ('HKD', 2), ('HUF', 2), ('IDR', 2), ('ILS', 2), ('INR', 2), ('ISK', 0),
        ('JOD', 3), ('JPY', 0), ('KES', 2), ('KRW', 0), ('KWD', 3), ('LKR', 2),
        ('MXN', 2), ('MYR', 2), ('NGN', 2), ('NOK', 2), ('NZD', 2), ('OMR', 3),
        ('PEN', 2), ('PGK', 2), ('PHP', 2), ('PKR', 2), ('PLN', 2), ('QAR', 2),
        ('RON', 2), ('SAR', 2), ('SEK', 2), ('SGD', 2), ('THB', 2), ('TND', 3),
        ('TRY', 2), ('TWD', 2), ('UAH', 2), ('USD', 2), ('VND', 0), ('WST', 2),
        ('XPF', 0), ('ZAR', 2)) t(code, e)
    WHERE code = upper(p_code) AND p_code ~ '^[A-Za-z]{3}$'
$$;

-- Money's Display: "NZD 12.50", "NZD -0.05", "JPY 1250", "KWD 1.250".
CREATE FUNCTION ledgerflow.money_text(p_minor numeric, p_code text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT upper(p_code) || ' ' || CASE WHEN p_minor < 0 THEN '-' ELSE '' END ||
           CASE WHEN e = 0 THEN abs(p_minor)::text
                ELSE div(abs(p_minor), 10::numeric ^ e)::text || '.' ||
                     lpad(mod(abs(p_minor), (10::numeric ^ e))::bigint::text, e, '0') END
    FROM (SELECT coalesce(ledgerflow.currency_exponent(p_code), 2) AS e) x
$$;

-- Rust's `{:?}` of a string: quoted, with \ " and control characters escaped.
CREATE FUNCTION ledgerflow.rust_debug_text(p text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v text := '';
    ch text;
BEGIN
    FOREACH ch IN ARRAY string_to_array(p, NULL) LOOP
        v := v || CASE
            WHEN ch = '\' THEN '\\'
            WHEN ch = '"' THEN '\"'
            WHEN ch = E'\t' THEN '\t'
            WHEN ch = E'\r' THEN '\r'
            WHEN ch = E'\n' THEN '\n'
            WHEN ascii(ch) < 32 OR ascii(ch) = 127 THEN '\u{' || to_hex(ascii(ch)) || '}'
            ELSE ch END;
    END LOOP;
    RETURN '"' || v || '"';
END;
$$;

-- Empty after Rust's str::trim (Unicode White_Space).
CREATE FUNCTION ledgerflow.blank(p text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p ~ '^[ \t\n\r\f\v\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$'
$$;

-- chrono's DateTime<Utc> serialization: RFC 3339, Z, fraction only as needed.
CREATE FUNCTION ledgerflow.rfc3339(p timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT to_char(p AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') ||
           CASE WHEN us = 0 THEN '' WHEN us % 1000 = 0 THEN '.' || lpad((us / 1000)::text, 3, '0')
                ELSE '.' || lpad(us::text, 6, '0') END || 'Z'
    FROM (SELECT (extract(microseconds FROM p)::bigint % 1000000) AS us) x
$$;

-- A time the snapshot carries (RFC 3339, any offset) as chrono writes it:
-- UTC, Z, the fraction to the nanosecond, only as many digits as needed
-- (timestamptz keeps microseconds, so the fraction is carried as text).
CREATE FUNCTION ledgerflow.rfc3339_text(p text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT to_char(regexp_replace(p, '\.[0-9]+', '')::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') ||
           CASE WHEN ns = 0 THEN '' WHEN ns % 1000000 = 0 THEN '.' || lpad((ns / 1000000)::text, 3, '0')
                WHEN ns % 1000 = 0 THEN '.' || lpad((ns / 1000)::text, 6, '0')
                ELSE '.' || lpad(ns::text, 9, '0') END || 'Z'
    FROM (SELECT coalesce(left(rpad(substring(p FROM '\.([0-9]+)'), 9, '0'), 9)::bigint, 0) AS ns) x
$$;

-- money.rs's round_div: half away from zero (d > 0).
CREATE FUNCTION ledgerflow.round_div(n numeric, d numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT sign(n) * div(abs(n) * 2 + d, 2 * d)
$$;

CREATE FUNCTION ledgerflow.fits_i64(n numeric) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT n BETWEEN -9223372036854775808 AND 9223372036854775807
$$;

-- ---------------------------------------------------------------------
-- The snapshot (workflows' invoice module, docs/snapshot.schema.json).
-- ---------------------------------------------------------------------

-- Whether one JSON value reads as `kind`; the problem, or NULL. `mode`:
-- required (present, not null), default (may be missing, not null),
-- option (may be missing or null) -- serde's three cases.
CREATE FUNCTION ledgerflow.snapshot_value_problem(v jsonb, kind text, mode text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t text := jsonb_typeof(v);
    s text := v #>> '{}';
BEGIN
    IF v IS NULL THEN
        RETURN CASE WHEN mode = 'required' THEN 'is missing' END;
    ELSIF t = 'null' THEN
        RETURN CASE WHEN mode <> 'option' THEN 'must not be null' END;
    END IF;
    CASE kind
    WHEN 'string' THEN
        IF t <> 'string' THEN RETURN 'must be a string, not ' || v::text; END IF;
    WHEN 'i64', 'u32' THEN
        IF t <> 'number' OR s !~ '^-?[0-9]+$' THEN
            RETURN 'must be a whole number, not ' || v::text;
        ELSIF kind = 'i64' AND NOT ledgerflow.fits_i64(s::numeric) THEN
            RETURN 'is out of range (a 64-bit integer): ' || s;
        END IF;
    WHEN 'object', 'array' THEN
        IF t <> kind THEN RETURN 'must be a JSON ' || kind || ', not ' || v::text; END IF;
    WHEN 'currency' THEN
        IF t <> 'string' OR ledgerflow.currency_exponent(s) IS NULL THEN
            RETURN format('unknown currency code %s (expected an ISO 4217 code such as "NZD")',
                          CASE WHEN t = 'string' THEN ledgerflow.rust_debug_text(s) ELSE v::text END);
        END IF;
    WHEN 'date' THEN
        IF t <> 'string' OR s !~ '^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}$' THEN
            RETURN 'must be a date (YYYY-MM-DD), not ' || v::text;
        END IF;
        BEGIN
            PERFORM s::date;
        EXCEPTION WHEN others THEN
            RETURN 'is not a date in the calendar: ' || v::text;
        END;
    WHEN 'datetime' THEN
        IF t <> 'string' OR s !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$' THEN
            RETURN 'must be a date and time in RFC 3339 (2024-05-01T09:30:00Z), not ' || v::text;
        END IF;
        BEGIN
            PERFORM s::timestamptz;
        EXCEPTION WHEN others THEN
            RETURN 'is not a time in the calendar: ' || v::text;
        END;
    ELSE
        -- An enum: kind lists its variants.
        IF t <> 'string' OR NOT s = ANY (string_to_array(kind, '|')) THEN
            RETURN 'must be one of ' || replace(kind, '|', ', ') || ', not ' || v::text;
        END IF;
    END CASE;
    RETURN NULL;
END;
$$;

-- A value with its presence: {"v": value} when `k` is in `o`, {} when it
-- is missing (a JSON null is present).
CREATE FUNCTION ledgerflow.slot(o jsonb, k text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(o) = 'object' AND o ? k THEN jsonb_build_object('v', o -> k) ELSE '{}'::jsonb END
$$;

-- The first value that cannot be read, as {field, message} with serde's
-- path ("lines[1].quantity"); NULL when the snapshot reads. Checked in a
-- fixed order; one bad value is named as the Rust decoder names it.
CREATE FUNCTION ledgerflow.snapshot_read_problem(s jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    checks jsonb;
    c jsonb;
    p text;
    e jsonb;
    i integer;
    sv text := s -> 'schema_version' #>> '{}';
BEGIN
    IF s IS NULL OR jsonb_typeof(s) <> 'object' THEN
        RETURN jsonb_build_object('field', '.', 'message', 'must be a JSON object, not ' || coalesce(s::text, 'nothing'));
    END IF;
    IF jsonb_typeof(s -> 'schema_version') IS DISTINCT FROM 'number' OR sv !~ '^[0-9]+$' THEN
        RETURN jsonb_build_object('field', 'schema_version', 'message', 'is missing or not a whole number');
    ELSIF sv::numeric <> 1 THEN
        RETURN jsonb_build_object('field', 'schema_version',
                                  'message', format('unsupported schema_version %s (this build reads 1)', sv));
    END IF;
    -- [path, value, kind, mode] in the order of the Rust struct's fields.
    checks := jsonb_build_array(
        jsonb_build_array('invoice_id', ledgerflow.slot(s, 'invoice_id'), 'string', 'required'),
        jsonb_build_array('number', ledgerflow.slot(s, 'number'), 'string', 'required'),
        jsonb_build_array('currency', ledgerflow.slot(s, 'currency'), 'currency', 'required'),
        jsonb_build_array('issued_on', ledgerflow.slot(s, 'issued_on'), 'date', 'required'),
        jsonb_build_array('due_on', ledgerflow.slot(s, 'due_on'), 'date', 'option'),
        jsonb_build_array('status', ledgerflow.slot(s, 'status'), 'draft|issued|partially_paid|paid|cancelled', 'required'),
        jsonb_build_array('customer', ledgerflow.slot(s, 'customer'), 'object', 'required'),
        jsonb_build_array('lines', ledgerflow.slot(s, 'lines'), 'array', 'required'),
        jsonb_build_array('discount', ledgerflow.slot(s, 'discount'), 'object', 'option'),
        jsonb_build_array('payments', ledgerflow.slot(s, 'payments'), 'array', 'default'),
        jsonb_build_array('totals', ledgerflow.slot(s, 'totals'), 'object', 'required'),
        jsonb_build_array('sales_channel', ledgerflow.slot(s, 'sales_channel'), 'string', 'option'),
        jsonb_build_array('location', ledgerflow.slot(s, 'location'), 'string', 'option'));
    FOR c IN SELECT * FROM jsonb_array_elements(checks) LOOP
        p := ledgerflow.snapshot_value_problem(c -> 1 -> 'v', c ->> 2, c ->> 3);
        IF p IS NOT NULL THEN
            RETURN jsonb_build_object('field', c ->> 0, 'message', p);
        END IF;
    END LOOP;

    checks := jsonb_build_array(
        jsonb_build_array('customer.customer_id', ledgerflow.slot(s -> 'customer', 'customer_id'), 'string', 'required'),
        jsonb_build_array('customer.name', ledgerflow.slot(s -> 'customer', 'name'), 'string', 'required'),
        jsonb_build_array('customer.email', ledgerflow.slot(s -> 'customer', 'email'), 'string', 'option'),
        jsonb_build_array('customer.phone', ledgerflow.slot(s -> 'customer', 'phone'), 'string', 'option'));
    FOR i IN 0 .. jsonb_array_length(s -> 'lines') - 1 LOOP
        e := s -> 'lines' -> i;
        checks := checks || jsonb_build_array(jsonb_build_array(format('lines[%s]', i), jsonb_build_object('v', e), 'object', 'required'));
        CONTINUE WHEN jsonb_typeof(e) <> 'object';
        checks := checks || jsonb_build_array(
            jsonb_build_array(format('lines[%s].line_id', i), ledgerflow.slot(e, 'line_id'), 'string', 'required'),
            jsonb_build_array(format('lines[%s].kind', i), ledgerflow.slot(e, 'kind'), 'item|return|discount', 'default'),
            jsonb_build_array(format('lines[%s].sku', i), ledgerflow.slot(e, 'sku'), 'string', 'option'),
            jsonb_build_array(format('lines[%s].description', i), ledgerflow.slot(e, 'description'), 'string', 'required'),
            jsonb_build_array(format('lines[%s].quantity', i), ledgerflow.slot(e, 'quantity'), 'i64', 'required'),
            jsonb_build_array(format('lines[%s].unit_price_minor', i), ledgerflow.slot(e, 'unit_price_minor'), 'i64', 'required'),
            jsonb_build_array(format('lines[%s].discount', i), ledgerflow.slot(e, 'discount'), 'object', 'option'),
            jsonb_build_array(format('lines[%s].tax_code', i), ledgerflow.slot(e, 'tax_code'), 'string', 'option'),
            jsonb_build_array(format('lines[%s].tax_minor', i), ledgerflow.slot(e, 'tax_minor'), 'i64', 'default'));
        IF jsonb_typeof(e -> 'discount') = 'object' THEN
            checks := checks || ledgerflow.discount_checks(format('lines[%s].discount', i), e -> 'discount');
        END IF;
    END LOOP;
    IF jsonb_typeof(s -> 'discount') = 'object' THEN
        checks := checks || ledgerflow.discount_checks('discount', s -> 'discount');
    END IF;
    FOR i IN 0 .. coalesce(jsonb_array_length(s -> 'payments'), 0) - 1 LOOP
        e := s -> 'payments' -> i;
        checks := checks || jsonb_build_array(jsonb_build_array(format('payments[%s]', i), jsonb_build_object('v', e), 'object', 'required'));
        CONTINUE WHEN jsonb_typeof(e) <> 'object';
        checks := checks || jsonb_build_array(
            jsonb_build_array(format('payments[%s].payment_id', i), ledgerflow.slot(e, 'payment_id'), 'string', 'required'),
            jsonb_build_array(format('payments[%s].amount_minor', i), ledgerflow.slot(e, 'amount_minor'), 'i64', 'required'),
            jsonb_build_array(format('payments[%s].currency', i), ledgerflow.slot(e, 'currency'), 'currency', 'option'),
            jsonb_build_array(format('payments[%s].paid_at', i), ledgerflow.slot(e, 'paid_at'), 'datetime', 'required'),
            jsonb_build_array(format('payments[%s].method', i), ledgerflow.slot(e, 'method'), 'string', 'option'),
            jsonb_build_array(format('payments[%s].reference', i), ledgerflow.slot(e, 'reference'), 'string', 'option'));
    END LOOP;
    checks := checks || jsonb_build_array(
        jsonb_build_array('totals.subtotal', ledgerflow.slot(s -> 'totals', 'subtotal'), 'i64', 'required'),
        jsonb_build_array('totals.discount_total', ledgerflow.slot(s -> 'totals', 'discount_total'), 'i64', 'required'),
        jsonb_build_array('totals.tax_total', ledgerflow.slot(s -> 'totals', 'tax_total'), 'i64', 'required'),
        jsonb_build_array('totals.total', ledgerflow.slot(s -> 'totals', 'total'), 'i64', 'required'));
    FOR c IN SELECT * FROM jsonb_array_elements(checks) LOOP
        p := ledgerflow.snapshot_value_problem(c -> 1 -> 'v', c ->> 2, c ->> 3);
        IF p IS NOT NULL THEN
            RETURN jsonb_build_object('field', c ->> 0, 'message', p);
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;

-- A discount: {"kind":"amount","amount_minor":..} or {"kind":"percent","basis_points":..}.
CREATE FUNCTION ledgerflow.discount_checks(p_path text, d jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_array(jsonb_build_array(p_path || '.kind', ledgerflow.slot(d, 'kind'), 'amount|percent', 'required')) ||
           CASE d ->> 'kind'
               WHEN 'amount' THEN jsonb_build_array(jsonb_build_array(p_path || '.amount_minor', ledgerflow.slot(d, 'amount_minor'), 'i64', 'required'))
               WHEN 'percent' THEN jsonb_build_array(jsonb_build_array(p_path || '.basis_points', ledgerflow.slot(d, 'basis_points'), 'i64', 'required'))
               ELSE '[]'::jsonb END
$$;

CREATE FUNCTION ledgerflow.discount_normalized(d jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE d ->> 'kind'
        WHEN 'amount' THEN jsonb_build_object('kind', 'amount', 'amount_minor', d -> 'amount_minor')
        WHEN 'percent' THEN jsonb_build_object('kind', 'percent', 'basis_points', d -> 'basis_points')
        ELSE 'null'::jsonb END
$$;

-- The snapshot as the Rust types write it: known fields only, defaults
-- filled in, currency codes upper case, dates and times in one spelling.
-- Only for a snapshot that reads (snapshot_read_problem is NULL).
CREATE FUNCTION ledgerflow.snapshot_normalized(s jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'schema_version', (s ->> 'schema_version')::integer,
        'invoice_id', s -> 'invoice_id', 'number', s -> 'number',
        'currency', upper(s ->> 'currency'),
        'issued_on', to_char((s ->> 'issued_on')::date, 'YYYY-MM-DD'),
        'due_on', to_char((s ->> 'due_on')::date, 'YYYY-MM-DD'),
        'status', s -> 'status',
        'customer', jsonb_build_object(
            'customer_id', s #> '{customer,customer_id}', 'name', s #> '{customer,name}',
            'email', coalesce(s #> '{customer,email}', 'null'), 'phone', coalesce(s #> '{customer,phone}', 'null')),
        'lines', coalesce((SELECT jsonb_agg(jsonb_build_object(
                     'line_id', l -> 'line_id', 'kind', coalesce(l ->> 'kind', 'item'),
                     'sku', coalesce(l -> 'sku', 'null'), 'description', l -> 'description',
                     'quantity', l -> 'quantity', 'unit_price_minor', l -> 'unit_price_minor',
                     'discount', ledgerflow.discount_normalized(l -> 'discount'),
                     'tax_code', coalesce(l -> 'tax_code', 'null'), 'tax_minor', coalesce(l -> 'tax_minor', '0'))
                     ORDER BY n) FROM jsonb_array_elements(s -> 'lines') WITH ORDINALITY x(l, n)), '[]'),
        'discount', ledgerflow.discount_normalized(s -> 'discount'),
        'payments', coalesce((SELECT jsonb_agg(jsonb_build_object(
                     'payment_id', p -> 'payment_id', 'amount_minor', p -> 'amount_minor',
                     'currency', upper(p ->> 'currency'),
                     'paid_at', ledgerflow.rfc3339_text(p ->> 'paid_at'),
                     'method', coalesce(p -> 'method', 'null'), 'reference', coalesce(p -> 'reference', 'null'))
                     ORDER BY n) FROM jsonb_array_elements(s -> 'payments') WITH ORDINALITY x(p, n)), '[]'),
        'totals', jsonb_build_object(
            'subtotal', s #> '{totals,subtotal}', 'discount_total', s #> '{totals,discount_total}',
            'tax_total', s #> '{totals,tax_total}', 'total', s #> '{totals,total}'),
        'sales_channel', coalesce(s -> 'sales_channel', 'null'),
        'location', coalesce(s -> 'location', 'null'))
$$;


-- InvoiceSnapshot::validate: every rule, every problem as {field, message},
-- in the same order and words (a proptest in workflows/tests/sql_face.rs
-- holds the two to it). For a snapshot that reads.
CREATE FUNCTION ledgerflow.snapshot_issues(s jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    issues jsonb := '[]';
    cur text := upper(s ->> 'currency');
    l jsonb;
    p jsonb;
    i integer := 0;
    field text;
    q numeric; price numeric; gross numeric; disc numeric; bps numeric; amount numeric;
    seen jsonb := '{}';
    seen_pay jsonb := '{}';
    comp_err text;
    subtotal numeric := 0; discount_total numeric := 0; tax_total numeric := 0; total numeric;
    paid numeric := 0;
    d jsonb := s -> 'discount';
BEGIN
    IF (s ->> 'schema_version')::numeric <> 1 THEN
        issues := issues || jsonb_build_object('field', 'schema_version',
            'message', format('unsupported version %s (this build reads 1)', s ->> 'schema_version'));
    END IF;
    IF ledgerflow.blank(s ->> 'invoice_id') THEN
        issues := issues || jsonb_build_object('field', 'invoice_id', 'message', 'must not be empty');
    END IF;
    IF ledgerflow.blank(s #>> '{customer,customer_id}') THEN
        issues := issues || jsonb_build_object('field', 'customer.customer_id', 'message', 'must not be empty');
    END IF;
    IF (s ->> 'due_on')::date < (s ->> 'issued_on')::date THEN
        issues := issues || jsonb_build_object('field', 'due_on', 'message',
            format('%s is before the issue date %s', to_char((s ->> 'due_on')::date, 'YYYY-MM-DD'),
                   to_char((s ->> 'issued_on')::date, 'YYYY-MM-DD')));
    END IF;

    FOR l IN SELECT x FROM jsonb_array_elements(s -> 'lines') WITH ORDINALITY t(x, n) ORDER BY n LOOP
        i := i + 1;
        field := CASE WHEN coalesce(l ->> 'sku', '') <> '' THEN format('line %s (SKU %s)', i, l ->> 'sku')
                      ELSE format('line %s (id %s)', i, ledgerflow.rust_debug_text(l ->> 'line_id')) END;
        IF ledgerflow.blank(l ->> 'line_id') THEN
            issues := issues || jsonb_build_object('field', field, 'message', 'line_id must not be empty');
        ELSIF seen ? (l ->> 'line_id') THEN
            issues := issues || jsonb_build_object('field', field, 'message',
                format('duplicate line_id %s (also on line %s)', ledgerflow.rust_debug_text(l ->> 'line_id'), seen ->> (l ->> 'line_id')));
        ELSE
            seen := seen || jsonb_build_object(l ->> 'line_id', i);
        END IF;
        q := (l ->> 'quantity')::numeric;
        price := (l ->> 'unit_price_minor')::numeric;
        IF q < 0 AND coalesce(l ->> 'kind', 'item') <> 'return' THEN
            issues := issues || jsonb_build_object('field', field, 'message', 'quantity must not be negative unless the line is a return');
        END IF;
        IF price < 0 AND coalesce(l ->> 'kind', 'item') <> 'discount' THEN
            issues := issues || jsonb_build_object('field', field, 'message', 'unit price must not be negative unless the line is a discount line');
        END IF;
        gross := ledgerflow.round_div(q * price, 1000);
        IF NOT ledgerflow.fits_i64(gross) THEN
            issues := issues || jsonb_build_object('field', field, 'message', 'amount out of range while computing a line amount');
            comp_err := coalesce(comp_err, 'amount out of range while computing a line amount');
            CONTINUE;
        END IF;
        amount := (l #>> '{discount,amount_minor}')::numeric;
        bps := (l #>> '{discount,basis_points}')::numeric;
        IF jsonb_typeof(l -> 'discount') = 'object' THEN
            IF coalesce(l ->> 'kind', 'item') <> 'item' THEN
                issues := issues || jsonb_build_object('field', field, 'message', 'a discount is only allowed on item lines');
            ELSIF amount < 0 THEN
                issues := issues || jsonb_build_object('field', field, 'message', 'discount must not be negative');
            ELSIF amount > greatest(gross, 0) THEN
                issues := issues || jsonb_build_object('field', field, 'message', format('discount %s exceeds the line amount %s',
                    ledgerflow.money_text(amount, cur), ledgerflow.money_text(gross, cur)));
            ELSIF bps NOT BETWEEN 0 AND 10000 THEN
                issues := issues || jsonb_build_object('field', field, 'message', 'discount must be between 0% and 100%');
            END IF;
        END IF;
        -- computed_totals, first error wins (as Rust's `?` order).
        IF comp_err IS NULL THEN
            IF bps NOT BETWEEN 0 AND 10000 THEN
                comp_err := format('discount of %s basis points is outside 0..=10000 (0%% to 100%%)', bps);
            ELSE
                disc := coalesce(amount, ledgerflow.round_div(gross * bps, 10000), 0);
                IF NOT ledgerflow.fits_i64(gross - disc) THEN
                    comp_err := 'amount out of range while computing a line amount';
                ELSIF NOT ledgerflow.fits_i64(subtotal + gross - disc) THEN
                    comp_err := 'amount out of range while computing a sum';
                ELSE
                    subtotal := subtotal + gross - disc;
                END IF;
            END IF;
        END IF;
    END LOOP;

    amount := (d ->> 'amount_minor')::numeric;
    bps := (d ->> 'basis_points')::numeric;
    IF comp_err IS NULL THEN
        IF bps NOT BETWEEN 0 AND 10000 THEN
            comp_err := format('discount of %s basis points is outside 0..=10000 (0%% to 100%%)', bps);
        ELSE
            discount_total := coalesce(amount, ledgerflow.round_div(subtotal * bps, 10000), 0);
        END IF;
    END IF;
    IF comp_err IS NULL THEN
        FOR l IN SELECT x FROM jsonb_array_elements(s -> 'lines') t(x) LOOP
            tax_total := tax_total + coalesce((l ->> 'tax_minor')::numeric, 0);
            IF NOT ledgerflow.fits_i64(tax_total) THEN
                comp_err := 'amount out of range while computing a sum';
                EXIT;
            END IF;
        END LOOP;
    END IF;
    IF comp_err IS NULL THEN
        total := subtotal - discount_total + tax_total;
        IF NOT ledgerflow.fits_i64(subtotal - discount_total) OR NOT ledgerflow.fits_i64(total) THEN
            comp_err := 'amount out of range while computing the total';
        END IF;
    END IF;

    IF amount < 0 THEN
        issues := issues || jsonb_build_object('field', 'discount', 'message', 'must not be negative');
    ELSIF bps NOT BETWEEN 0 AND 10000 THEN
        issues := issues || jsonb_build_object('field', 'discount', 'message', 'must be between 0% and 100%');
    ELSIF comp_err IS NULL AND amount > greatest(subtotal, 0) THEN
        issues := issues || jsonb_build_object('field', 'discount', 'message', format('%s exceeds the subtotal %s',
            ledgerflow.money_text(amount, cur), ledgerflow.money_text(subtotal, cur)));
    ELSIF comp_err IS NULL AND bps IS NOT NULL AND subtotal < 0 THEN
        issues := issues || jsonb_build_object('field', 'discount', 'message', 'a percentage discount needs a positive subtotal');
    END IF;

    i := 0;
    FOR p IN SELECT x FROM jsonb_array_elements(coalesce(s -> 'payments', '[]')) WITH ORDINALITY t(x, n) ORDER BY n LOOP
        i := i + 1;
        field := format('payment %s (%s)', i, ledgerflow.rust_debug_text(p ->> 'payment_id'));
        IF ledgerflow.blank(p ->> 'payment_id') THEN
            issues := issues || jsonb_build_object('field', field, 'message', 'payment_id must not be empty');
        ELSIF seen_pay ? (p ->> 'payment_id') THEN
            issues := issues || jsonb_build_object('field', field, 'message', 'duplicate payment_id');
        ELSE
            seen_pay := seen_pay || jsonb_build_object(p ->> 'payment_id', i);
        END IF;
        IF upper(p ->> 'currency') <> cur THEN
            issues := issues || jsonb_build_object('field', field, 'message',
                format('currency %s differs from the invoice currency %s', upper(p ->> 'currency'), cur));
        END IF;
        paid := paid + (p ->> 'amount_minor')::numeric;
        IF NOT ledgerflow.fits_i64(paid) THEN
            paid := NULL;
        END IF;
    END LOOP;

    IF comp_err IS NULL THEN
        issues := issues || (
            SELECT coalesce(jsonb_agg(jsonb_build_object('field', f, 'message',
                       format('is %s but %s %s', ledgerflow.money_text(sent, cur), what, ledgerflow.money_text(expected, cur)))
                       ORDER BY ord), '[]')
            FROM (VALUES (1, 'totals.subtotal', (s #>> '{totals,subtotal}')::numeric, subtotal, 'the lines add up to'),
                         (2, 'totals.discount_total', (s #>> '{totals,discount_total}')::numeric, discount_total, 'the invoice discount is'),
                         (3, 'totals.tax_total', (s #>> '{totals,tax_total}')::numeric, tax_total, 'the line taxes add up to'),
                         (4, 'totals.total', (s #>> '{totals,total}')::numeric, total, 'subtotal - discount + tax is'))
                 t(ord, f, sent, expected, what)
            WHERE sent <> expected);
        IF paid IS NULL THEN
            issues := issues || jsonb_build_object('field', 'payments', 'message', 'amount out of range while computing the payments');
        ELSIF (total >= 0 AND paid > total) OR (total < 0 AND paid < total) THEN
            issues := issues || jsonb_build_object('field', 'payments', 'message', format('add up to %s, beyond the invoice total %s',
                ledgerflow.money_text(paid, cur), ledgerflow.money_text(total, cur)));
        END IF;
    ELSE
        issues := issues || jsonb_build_object('field', 'totals', 'message', 'cannot be computed: ' || comp_err);
    END IF;
    RETURN issues;
END;
$$;

-- Refuse a snapshot that cannot be read or breaks a rule (22023, the field
-- and the problem in the message, the issues as JSON in DETAIL). Returns
-- the snapshot as the Rust types write it.
CREATE FUNCTION ledgerflow.check_snapshot(snapshot jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    problem jsonb := coalesce(ledgerflow.snapshot_read_problem(snapshot),
                              ledgerflow.payment_terms_read_problem(snapshot));
    issues jsonb;
BEGIN
    IF problem IS NOT NULL THEN
        PERFORM ledgerflow.face_error('22023',
            format('the invoice snapshot could not be read: %s: %s', problem ->> 'field', problem ->> 'message'),
            jsonb_build_object('kind', 'snapshot_unreadable') || problem);
    END IF;
    -- Payment terms (migration 20261207000019_approvals.sql defines their
    -- checks; PL/pgSQL resolves the calls when it runs).
    issues := ledgerflow.snapshot_issues(snapshot) || ledgerflow.payment_terms_issues(snapshot);
    IF jsonb_array_length(issues) > 0 THEN
        PERFORM ledgerflow.face_error('22023',
            format('the invoice snapshot has %s problem(s): %s', jsonb_array_length(issues),
                   (SELECT string_agg((x ->> 'field') || ': ' || (x ->> 'message'), '; ' ORDER BY n)
                    FROM jsonb_array_elements(issues) WITH ORDINALITY t(x, n))),
            jsonb_build_object('kind', 'snapshot_invalid', 'issues', issues));
    END IF;
    RETURN ledgerflow.snapshot_normalized(snapshot) || ledgerflow.payment_terms_normalized(snapshot);
END;
$$;

-- ---------------------------------------------------------------------
-- Triggers and settings (settings.rs holds the typed settings; the rule
-- "does this trigger sync" is here).
-- ---------------------------------------------------------------------

-- Trigger codes as the sync dialog's JSON spells them, with the label shown
-- when the host sends none.
CREATE FUNCTION ledgerflow.trigger_label(p_trigger text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_trigger
        WHEN 'job_created' THEN 'job created'
        WHEN 'items_changed' THEN 'invoice items changed'
        WHEN 'invoice_created' THEN 'invoice created'
        WHEN 'sale_completed' THEN 'sale completed'
        WHEN 'online_booking_created' THEN 'online booking created'
        WHEN 'online_booking_accepted' THEN 'online booking accepted'
        WHEN 'job_cancelled' THEN 'job cancelled'
        WHEN 'job_rejected' THEN 'job rejected'
        WHEN 'invoice_paid' THEN 'invoice marked as paid'
        WHEN 'payment_added' THEN 'payment added to invoice'
        WHEN 'invoice_sent' THEN 'invoice sent'
        WHEN 'manual_resync' THEN 're-sync requested'
        WHEN 'manual_send_as_new' THEN 'send as new requested'
        WHEN 'manual_retry' THEN 'retry requested'
    END
$$;

CREATE FUNCTION ledgerflow.check_host_trigger(p_trigger text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_trigger IS NULL OR p_trigger LIKE 'manual\_%' OR ledgerflow.trigger_label(p_trigger) IS NULL THEN
        PERFORM ledgerflow.face_error('22023',
            format('trigger: unknown host trigger %s (expected one of job_created, items_changed, invoice_created, '
                   'sale_completed, online_booking_created, online_booking_accepted, job_cancelled, job_rejected, '
                   'invoice_paid, payment_added, invoice_sent)', coalesce(ledgerflow.rust_debug_text(p_trigger), 'NULL')),
            jsonb_build_object('kind', 'unknown_trigger', 'trigger', p_trigger));
    END IF;
END;
$$;

CREATE FUNCTION ledgerflow.provider_display_name(p_provider text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_provider
        WHEN 'shopify' THEN 'Shopify' WHEN 'lightspeed_r' THEN 'Lightspeed R-Series'
        WHEN 'lightspeed_x' THEN 'Lightspeed X-Series' WHEN 'xero' THEN 'Xero'
        WHEN 'saledock' THEN 'Saledock' WHEN 'quickbooks' THEN 'QuickBooks Online' ELSE p_provider END
$$;

-- A boolean setting, with the serde default when it is absent.
CREATE FUNCTION ledgerflow.setting(p_settings jsonb, p_path text[], p_default boolean) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce((p_settings #>> p_path)::boolean, p_default)
$$;

-- Why `p_trigger` does not sync (a SkipReason code), or NULL when it syncs.
-- A person's explicit "sync this one" (override true) syncs even when
-- automatic sync is off (QuickBooks' own "Enable Sync" off skips even
-- that); false always skips; NULL follows, in order, the
-- master toggle, the invoice's toggle, "when to sync", then the provider's
-- per-type toggles.
CREATE FUNCTION ledgerflow.trigger_skip_reason(
    p_settings jsonb, p_trigger text, p_invoice_auto_sync boolean, p_override boolean) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_settings #>> '{provider,provider}' = 'quickbooks'
             AND NOT ledgerflow.setting(p_settings, '{provider,sync_enabled}', true) THEN 'provider_sync_off'
        WHEN p_override IS TRUE THEN NULL
        WHEN p_override IS FALSE THEN 'overridden_for_this_action'
        WHEN NOT ledgerflow.setting(p_settings, '{auto_sync}', false) THEN 'master_toggle_off'
        WHEN NOT p_invoice_auto_sync THEN 'invoice_auto_sync_off'
        WHEN p_trigger IN ('job_cancelled', 'job_rejected')
             AND NOT ledgerflow.setting(p_settings, '{mark_deleted_on_cancel}', false) THEN 'mark_deleted_off'
        WHEN NOT CASE p_trigger
                 WHEN 'job_created' THEN ledgerflow.setting(p_settings, '{when_to_sync,job_created}', true)
                 WHEN 'items_changed' THEN ledgerflow.setting(p_settings, '{when_to_sync,items_changed}', true)
                 WHEN 'invoice_created' THEN ledgerflow.setting(p_settings, '{when_to_sync,invoice_created}', true)
                 WHEN 'sale_completed' THEN ledgerflow.setting(p_settings, '{when_to_sync,sale_completed}', true)
                 WHEN 'online_booking_created' THEN
                     coalesce(p_settings #>> '{when_to_sync,online_booking}', 'off') = 'when_created'
                 WHEN 'online_booking_accepted' THEN
                     coalesce(p_settings #>> '{when_to_sync,online_booking}', 'off') = 'when_accepted'
                 ELSE true END THEN 'trigger_off'
        WHEN p_settings #>> '{provider,provider}' = 'quickbooks' AND p_trigger = 'payment_added'
             AND NOT ledgerflow.setting(p_settings, '{provider,sync_payments}', true) THEN 'payment_sync_off'
        WHEN p_settings #>> '{provider,provider}' = 'quickbooks' AND p_trigger <> 'payment_added'
             AND NOT ledgerflow.setting(p_settings, '{provider,sync_invoices}', true) THEN 'invoice_sync_off'
        WHEN p_settings #>> '{provider,provider}' = 'xero' AND p_trigger = 'payment_added'
             AND NOT ledgerflow.setting(p_settings, '{provider,sync_payments}', false) THEN 'payment_sync_off'
    END
$$;

CREATE FUNCTION ledgerflow.skip_message(p_code text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_code
        WHEN 'overridden_for_this_action' THEN 'sync was switched off for this action'
        WHEN 'master_toggle_off' THEN 'paused: automatic sync is off in settings'
        WHEN 'invoice_auto_sync_off' THEN 'auto-sync is off for this invoice'
        WHEN 'trigger_off' THEN 'this trigger is switched off in settings'
        WHEN 'mark_deleted_off' THEN 'marking as deleted on cancel is off'
        WHEN 'invoice_sync_off' THEN 'invoice sync is off for this connection'
        WHEN 'payment_sync_off' THEN 'payment sync is off for this connection'
        WHEN 'provider_sync_off' THEN 'sync is switched off for this connection (Enable Sync)'
        WHEN 'draft_not_sent' THEN 'a draft invoice syncs once it is sent'
    END
$$;

-- The quiet period automatic syncs wait out (ConnectionSettings::quiet_period):
-- clamped, so settings written around validation are not trusted; NULLs
-- when syncs run at once.
CREATE FUNCTION ledgerflow.quiet_period(p_settings jsonb, OUT quiet_ms bigint, OUT max_wait_ms bigint)
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN q > 0 THEN q END,
           CASE WHEN q > 0 THEN least(greatest(coalesce((p_settings ->> 'max_quiet_wait_ms')::numeric, 10000), q), 60000)::bigint END
    FROM (SELECT least(greatest(coalesce((p_settings ->> 'quiet_period_ms')::numeric, 1000), 0), 60000)::bigint AS q) x
$$;

CREATE FUNCTION ledgerflow.ledger_connection(p_connection_id bigint) RETURNS ledgerflow.connections
LANGUAGE plpgsql STABLE AS $$
DECLARE
    c ledgerflow.connections;
BEGIN
    SELECT * INTO c FROM ledgerflow.connections WHERE id = p_connection_id;
    IF NOT FOUND THEN
        PERFORM ledgerflow.face_error('P0002', format('connection %s does not exist', p_connection_id),
            jsonb_build_object('kind', 'connection_not_found', 'connection_id', p_connection_id));
    END IF;
    RETURN c;
END;
$$;

CREATE FUNCTION ledgerflow.recorded(p_event bigint, p_status text, p_code text, p_message text, p_job bigint)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('event_id', p_event, 'status', p_status, 'skip_reason', p_code,
                              'skip_message', p_message, 'job_id', p_job)
$$;

-- ---------------------------------------------------------------------
-- Writing sync events (the caller holds or takes the invoice_sync row
-- lock: lock order invoice_sync row, then sync_events, then jobs).
-- ---------------------------------------------------------------------

-- A person pressed a button: the pending job runs now and first (the
-- queue's `ledgerflow.expedite_job`), and the invoice's row names it, so an
-- automatic edit joining it does not push it back into a quiet period. A
-- held job stays held, a running one alone.
CREATE FUNCTION ledgerflow.ledger_expedite(p_connection_id bigint, p_invoice_id text, p_job bigint)
RETURNS void LANGUAGE sql AS $$
    SELECT ledgerflow.expedite_job(p_job, 1::smallint);
    UPDATE ledgerflow.invoice_sync SET expedited_job_id = p_job
    WHERE connection_id = p_connection_id AND invoice_id = p_invoice_id;
$$;

-- The quiet period: a job a person expedited is left alone; any other is
-- delayed by the queue (`ledgerflow.delay_unclaimed_job`).
CREATE FUNCTION ledgerflow.hold_for_quiet_period(
    p_connection_id bigint, p_invoice_id text, p_job bigint, p_quiet_ms bigint, p_max_wait_ms bigint)
RETURNS void LANGUAGE sql AS $$
    SELECT ledgerflow.delay_unclaimed_job(p_job, p_quiet_ms, p_max_wait_ms)
    WHERE NOT EXISTS (SELECT 1 FROM ledgerflow.invoice_sync s
                      WHERE s.connection_id = p_connection_id AND s.invoice_id = p_invoice_id
                        AND s.expedited_job_id = p_job);
$$;

-- Insert a pending event, supersede the invoice's older pending events and
-- those held for approval (an edit inherits a superseded "send as new"; a
-- void still wins; a sync that goes now spends the invoice's approval) and,
-- unless a chain's invoice step will, enqueue or join the invoice's job.
CREATE FUNCTION ledgerflow.ledger_open_event(
    c ledgerflow.connections, p_invoice_id text, p_trigger text, p_label text, p_operation text,
    p_void_existing boolean, p_snapshot jsonb, p_retry_of bigint, p_expedite boolean, p_by_chain boolean)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_event bigint;
    v_job bigint;
    v_quiet record;
    v_run_at timestamptz;
BEGIN
    IF p_operation NOT IN ('upsert', 'send_as_new', 'void') THEN
        PERFORM ledgerflow.face_error('55000',
            format('a %s event is written by its chain step when it finishes, not opened', p_operation),
            jsonb_build_object('kind', 'not_allowed'));
    END IF;
    INSERT INTO ledgerflow.sync_events
        (connection_id, invoice_id, trigger, trigger_label, status, operation, void_existing, snapshot, retry_of)
    VALUES (c.id, p_invoice_id, p_trigger, p_label, 'pending', p_operation, p_void_existing, p_snapshot, p_retry_of)
    RETURNING id INTO v_event;

    WITH sup AS (
        UPDATE ledgerflow.sync_events
        SET status = 'superseded', superseded_by = v_event, finished_at = now(), updated_at = now()
        WHERE connection_id = c.id AND invoice_id = p_invoice_id
          AND status IN ('pending', 'awaiting_approval', 'approved') AND id < v_event
        RETURNING operation, void_existing
    )
    UPDATE ledgerflow.sync_events e
    SET operation = CASE WHEN e.operation = 'upsert'
                              AND EXISTS (SELECT 1 FROM sup WHERE operation = 'send_as_new')
                         THEN 'send_as_new' ELSE e.operation END,
        void_existing = e.void_existing
                        OR coalesce((SELECT bool_or(void_existing) FROM sup WHERE operation = 'send_as_new'), false)
    WHERE e.id = v_event;
    DELETE FROM ledgerflow.backfill_approvals a WHERE a.connection_id = c.id AND a.invoice_id = p_invoice_id;

    IF p_by_chain THEN
        RETURN ledgerflow.recorded(v_event, 'pending', NULL, NULL, NULL);
    END IF;

    v_quiet := ledgerflow.quiet_period(c.settings);
    IF p_expedite THEN
        v_run_at := now();
    ELSIF p_operation <> 'void' AND v_quiet.quiet_ms IS NOT NULL THEN
        -- Inserted already waiting: outside a transaction a job inserted
        -- available could be claimed before the statement that holds it back.
        v_run_at := clock_timestamp() + make_interval(secs => v_quiet.quiet_ms::float8 / 1000);
    END IF;
    v_job := ledgerflow.enqueue(
        kind => CASE WHEN p_operation = 'void' THEN 'void-order' ELSE 'upsert-invoice' END,
        payload => jsonb_build_object('tenant', c.tenant_id, 'connection_id', c.id, 'invoice_id', p_invoice_id),
        queue => 'default', priority => 1::smallint, tenant => c.tenant_id, run_at => v_run_at,
        unique_key => format('sync:%s:%s', c.id, p_invoice_id), kind_version => 1,
        hold_key => format('connection:%s', c.id));
    IF p_expedite THEN
        PERFORM ledgerflow.ledger_expedite(c.id, p_invoice_id, v_job);
    ELSIF p_operation = 'void' THEN
        PERFORM ledgerflow.wake_unclaimed_job(v_job);
    ELSIF v_quiet.quiet_ms IS NOT NULL THEN
        PERFORM ledgerflow.hold_for_quiet_period(c.id, p_invoice_id, v_job, v_quiet.quiet_ms, v_quiet.max_wait_ms);
    END IF;
    UPDATE ledgerflow.sync_events SET job_id = v_job WHERE id = v_event;
    RETURN ledgerflow.recorded(v_event, 'pending', NULL, NULL, v_job);
END;
$$;

-- A host trigger on one connection, for a snapshot already checked: always
-- an event, skipped with the reason, held for approval (awaiting_approval
-- or approved, nothing enqueued) or pending (its job enqueued, or left to a
-- chain when p_by_chain).
CREATE FUNCTION ledgerflow.ledger_record(
    p_connection_id bigint, p_trigger text, p_label text, p_snapshot jsonb, p_override boolean, p_by_chain boolean)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    c ledgerflow.connections := ledgerflow.ledger_connection(p_connection_id);
    v_invoice text := p_snapshot ->> 'invoice_id';
    v_auto boolean;
    v_code text;
    v_message text;
    v_event bigint;
    v_operation text := CASE WHEN p_trigger IN ('job_cancelled', 'job_rejected') THEN 'void' ELSE 'upsert' END;
BEGIN
    -- Takes the invoice's row lock: triggers of one invoice, and the job
    -- that picks their newest pending event, see each other (sync.rs).
    INSERT INTO ledgerflow.invoice_sync (connection_id, invoice_id, latest_snapshot)
    VALUES (c.id, v_invoice, p_snapshot)
    ON CONFLICT (connection_id, invoice_id)
    DO UPDATE SET latest_snapshot = excluded.latest_snapshot, updated_at = now()
    RETURNING auto_sync INTO v_auto;

    IF c.status = 'disabled' THEN
        v_code := 'connection_disabled';
        v_message := format('the %s connection is disabled', ledgerflow.provider_display_name(c.provider));
    ELSE
        -- QuickBooks: a draft never syncs until it is sent, whatever is asked.
        v_code := coalesce(ledgerflow.trigger_skip_reason(c.settings, p_trigger, v_auto, p_override),
            CASE WHEN c.provider = 'quickbooks' AND v_operation = 'upsert'
                      AND p_snapshot ->> 'status' = 'draft' THEN 'draft_not_sent' END);
        v_message := ledgerflow.skip_message(v_code);
        -- An invoice with a synced payment refuses edits of its lines and
        -- synced payments (ledgerflow.locked_edit, migration
        -- 20261207000020_single_invoice_sync.sql; PL/pgSQL resolves the
        -- call when it runs, after every migration): recorded, not sent.
        IF v_code IS NULL AND v_operation = 'upsert' THEN
            v_message := ledgerflow.locked_edit(c.id, v_invoice, p_snapshot);
            v_code := CASE WHEN v_message IS NOT NULL THEN 'locked_synced_payment' END;
        END IF;
    END IF;
    -- "Approve before sync": an upsert that would sync waits for a person
    -- (ledgerflow.ledger_hold_for_approval, migration 20261207000019_approvals.sql);
    -- a void goes at once (it supersedes what is held).
    IF v_code IS NULL AND v_operation = 'upsert'
       AND ledgerflow.setting(c.settings, '{approve_before_sync}', false) THEN
        RETURN ledgerflow.ledger_hold_for_approval(c, v_invoice, p_trigger,
                                                   coalesce(p_label, ledgerflow.trigger_label(p_trigger)), p_snapshot);
    END IF;
    IF v_code IS NOT NULL THEN
        INSERT INTO ledgerflow.sync_events
            (connection_id, invoice_id, trigger, trigger_label, status, skip_reason, skip_message,
             operation, snapshot, finished_at)
        VALUES (c.id, v_invoice, p_trigger, coalesce(p_label, ledgerflow.trigger_label(p_trigger)), 'skipped',
                v_code, v_message, v_operation, p_snapshot, now())
        RETURNING id INTO v_event;
        RETURN ledgerflow.recorded(v_event, 'skipped', v_code, v_message, NULL);
    END IF;
    RETURN ledgerflow.ledger_open_event(c, v_invoice, p_trigger, coalesce(p_label, ledgerflow.trigger_label(p_trigger)),
                                        v_operation, false, p_snapshot, NULL, false, p_by_chain);
END;
$$;

-- Record a host trigger on one connection (ledger::record_trigger).
-- Returns {event_id, status: pending|skipped|awaiting_approval|approved, skip_reason, skip_message, job_id}.
CREATE FUNCTION ledgerflow.record_trigger(
    connection_id bigint, trigger text, snapshot jsonb, label text DEFAULT NULL, action_override boolean DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledgerflow.check_host_trigger(record_trigger.trigger);
    RETURN ledgerflow.ledger_record(record_trigger.connection_id, record_trigger.trigger, record_trigger.label,
                                    ledgerflow.check_snapshot(record_trigger.snapshot),
                                    record_trigger.action_override, false);
END;
$$;

-- ---------------------------------------------------------------------
-- Sync chains (chains.rs documents the chains; ledgerflow.start_workflow_run
-- starts them).
-- ---------------------------------------------------------------------

-- One step of a sync chain (every ledger kind: version 1, queue default, live).
CREATE FUNCTION ledgerflow.chain_step(p_name text, p_kind text, p_payload jsonb, p_unique_key text,
                                      p_hold_key text, p_after integer[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('name', p_name, 'kind', p_kind, 'kind_version', 1, 'payload', p_payload,
                              'queue', 'default', 'priority', 1, 'hold_key', p_hold_key,
                              'unique_key', p_unique_key, 'depends_on', to_jsonb(p_after))
$$;

-- The chain a trigger that syncs becomes on connection `c`: void; or
-- customer (where the provider keeps customers), changed items (QuickBooks) -> invoice -> complete
-- draft (Shopify draft orders, "complete draft when paid", paid in full)
-- or one step per payment (where the connection carries payments).
CREATE FUNCTION ledgerflow.sync_chain_steps(c ledgerflow.connections, p_trigger text, s jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_invoice text := s ->> 'invoice_id';
    v_key text := format('sync:%s:%s', c.id, s ->> 'invoice_id');
    v_hold text := format('connection:%s', c.id);
    v_base jsonb := jsonb_build_object('tenant', c.tenant_id, 'connection_id', c.id);
    p jsonb := c.settings -> 'provider';
    v_provider text := c.settings #>> '{provider,provider}';
    v_steps jsonb := '[]';
    v_invoice_at integer;
    v_paid numeric;
BEGIN
    IF p_trigger IN ('job_cancelled', 'job_rejected') THEN
        RETURN jsonb_build_array(ledgerflow.chain_step('void ' || (s ->> 'number'), 'void-order',
            v_base || jsonb_build_object('invoice_id', v_invoice), v_key, v_hold, '{}'));
    END IF;
    IF (v_provider <> 'quickbooks' OR ledgerflow.setting(p, '{sync_customers}', true))
       AND coalesce(s #>> '{customer,customer_id}', '') <> '' THEN
        v_steps := v_steps || ledgerflow.chain_step('customer ' || (s #>> '{customer,name}'), 'sync-customer',
            v_base || jsonb_build_object('customer_id', s #> '{customer,customer_id}', 'invoice_id', v_invoice),
            format('customer:%s:%s', c.id, s #>> '{customer,customer_id}'), v_hold, '{}');
    END IF;
    -- QuickBooks: the service items the lines name that the host changed
    -- and that have not synced yet (ledgerflow.changed_item_steps, with
    -- the host's records).
    v_steps := v_steps || ledgerflow.changed_item_steps(c, s);
    v_invoice_at := jsonb_array_length(v_steps);
    -- The invoice waits for every step before it (its customer, its items).
    v_steps := v_steps || ledgerflow.chain_step('invoice ' || (s ->> 'number'), 'upsert-invoice',
        v_base || jsonb_build_object('invoice_id', v_invoice), v_key, v_hold,
        coalesce((SELECT array_agg(i ORDER BY i) FROM generate_series(0, v_invoice_at - 1) i), '{}'));

    SELECT coalesce(sum((x ->> 'amount_minor')::numeric), 0) INTO v_paid
    FROM jsonb_array_elements(coalesce(s -> 'payments', '[]')) x;
    IF v_provider = 'shopify' AND ledgerflow.setting(p, '{use_draft_orders}', true)
       AND ledgerflow.setting(p, '{complete_draft_when_paid}', true)
       AND (s ->> 'status' = 'paid' OR ((s #>> '{totals,total}')::numeric > 0 AND v_paid >= (s #>> '{totals,total}')::numeric)) THEN
        v_steps := v_steps || ledgerflow.chain_step('complete draft', 'complete-draft',
            v_base || jsonb_build_object('invoice_id', v_invoice), v_key, v_hold, ARRAY[v_invoice_at]);
    ELSIF (v_provider = 'xero' AND ledgerflow.setting(p, '{sync_payments}', false))
       OR (v_provider = 'quickbooks' AND ledgerflow.setting(p, '{sync_payments}', true))
       OR (v_provider = 'lightspeed_r' AND ledgerflow.setting(p, '{layaway_sales}', false)) THEN
        v_steps := v_steps || coalesce((
            SELECT jsonb_agg(ledgerflow.chain_step('payment ' || (x ->> 'payment_id'), 'push-payment',
                       v_base || jsonb_build_object('invoice_id', v_invoice, 'payment_id', x -> 'payment_id'),
                       v_key, v_hold, ARRAY[v_invoice_at]) ORDER BY n)
            FROM jsonb_array_elements(coalesce(s -> 'payments', '[]')) WITH ORDINALITY t(x, n)), '[]');
    END IF;
    RETURN v_steps;
END;
$$;

-- Record a host trigger on every connection of the tenant and start the
-- chain each sync needs, in the caller's transaction. Returns one element
-- per connection, oldest first: {connection_id, provider, event (as
-- record_trigger returns it), run_id (NULL when skipped), steps (names)}.
CREATE FUNCTION ledgerflow.on_host_trigger(
    tenant text, trigger text, snapshot jsonb, label text DEFAULT NULL, action_override boolean DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_snapshot jsonb;
    c ledgerflow.connections;
    v_event jsonb;
    v_steps jsonb;
    v_run bigint;
    v_job bigint;
    v_quiet record;
    v_out jsonb := '[]';
BEGIN
    PERFORM ledgerflow.check_host_trigger(on_host_trigger.trigger);
    v_snapshot := ledgerflow.check_snapshot(on_host_trigger.snapshot);
    IF NOT EXISTS (SELECT 1 FROM ledgerflow.tenants t WHERE t.id = on_host_trigger.tenant) THEN
        PERFORM ledgerflow.face_error('P0002', format('tenant %s does not exist', ledgerflow.rust_debug_text(on_host_trigger.tenant)),
            jsonb_build_object('kind', 'tenant_not_found', 'tenant', on_host_trigger.tenant));
    END IF;
    FOR c IN SELECT * FROM ledgerflow.connections x WHERE x.tenant_id = on_host_trigger.tenant ORDER BY x.id LOOP
        v_event := ledgerflow.ledger_record(c.id, on_host_trigger.trigger, on_host_trigger.label, v_snapshot,
                                            on_host_trigger.action_override, true);
        IF v_event ->> 'status' <> 'pending' THEN
            v_out := v_out || jsonb_build_array(jsonb_build_object('connection_id', c.id, 'provider', c.provider,
                'event', v_event, 'run_id', NULL, 'steps', '[]'::jsonb));
            CONTINUE;
        END IF;
        v_steps := ledgerflow.sync_chain_steps(c, on_host_trigger.trigger, v_snapshot);
        v_run := ledgerflow.start_workflow_run(
            format('%s on %s: invoice %s', ledgerflow.trigger_label(on_host_trigger.trigger),
                   ledgerflow.provider_display_name(c.provider), v_snapshot ->> 'number'),
            c.tenant_id, v_steps);
        -- The quiet period applies to the jobs the run's first steps went
        -- to; the later steps join the one delayed first job's successors.
        -- A void chain runs at once.
        v_quiet := ledgerflow.quiet_period(c.settings);
        FOR v_job IN SELECT DISTINCT job_id FROM ledgerflow.workflow_steps
                     WHERE run_id = v_run AND status = 'enqueued' AND job_id IS NOT NULL ORDER BY job_id LOOP
            IF on_host_trigger.trigger IN ('job_cancelled', 'job_rejected') THEN
                PERFORM ledgerflow.wake_unclaimed_job(v_job);
            ELSIF v_quiet.quiet_ms IS NOT NULL THEN
                PERFORM ledgerflow.hold_for_quiet_period(c.id, v_snapshot ->> 'invoice_id', v_job,
                                                         v_quiet.quiet_ms, v_quiet.max_wait_ms);
            END IF;
        END LOOP;
        UPDATE ledgerflow.sync_events SET workflow_run_id = v_run WHERE id = (v_event ->> 'event_id')::bigint;
        v_out := v_out || jsonb_build_array(jsonb_build_object('connection_id', c.id, 'provider', c.provider,
            'event', v_event, 'run_id', v_run,
            'steps', (SELECT jsonb_agg(x -> 'name' ORDER BY n) FROM jsonb_array_elements(v_steps) WITH ORDINALITY t(x, n))));
    END LOOP;
    RETURN v_out;
END;
$$;

-- ---------------------------------------------------------------------
-- The sync dialog's actions (a person is waiting: each runs now and first).
-- ---------------------------------------------------------------------

CREATE FUNCTION ledgerflow.ledger_manual(
    p_connection_id bigint, p_invoice_id text, p_trigger text, p_operation text,
    p_void_existing boolean, p_retry_of bigint) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    c ledgerflow.connections := ledgerflow.ledger_connection(p_connection_id);
    v_snapshot jsonb;
BEGIN
    IF c.status = 'disabled' THEN
        PERFORM ledgerflow.face_error('55000',
            format('the %s connection is disabled: enable it in settings first', ledgerflow.provider_display_name(c.provider)),
            jsonb_build_object('kind', 'not_allowed'));
    END IF;
    -- The row lock orders this action with triggers and the running job.
    SELECT latest_snapshot INTO v_snapshot FROM ledgerflow.invoice_sync
    WHERE connection_id = p_connection_id AND invoice_id = p_invoice_id FOR UPDATE;
    IF v_snapshot IS NULL THEN
        PERFORM ledgerflow.face_error('P0002',
            format('invoice %s has never been sent to connection %s', ledgerflow.rust_debug_text(p_invoice_id), p_connection_id),
            jsonb_build_object('kind', 'invoice_unknown', 'connection_id', p_connection_id, 'invoice_id', p_invoice_id));
    END IF;
    RETURN ledgerflow.ledger_open_event(c, p_invoice_id, p_trigger, ledgerflow.trigger_label(p_trigger), p_operation,
                                        p_void_existing, v_snapshot, p_retry_of, true, false);
END;
$$;

-- "Re-sync now": push the newest snapshot to the existing record.
CREATE FUNCTION ledgerflow.resync_now(connection_id bigint, invoice_id text) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT ledgerflow.ledger_manual(connection_id, invoice_id, 'manual_resync', 'upsert', false, NULL)
$$;

-- "Send as new": a new record, ignoring the link; void_existing voids the old one first.
CREATE FUNCTION ledgerflow.send_as_new(connection_id bigint, invoice_id text, void_existing boolean DEFAULT false)
RETURNS jsonb LANGUAGE sql AS $$
    SELECT ledgerflow.ledger_manual(connection_id, invoice_id, 'manual_send_as_new', 'send_as_new', void_existing, NULL)
$$;

-- "Retry": only when the invoice's last sync (skipped and superseded aside)
-- failed, or waits on a chain step that failed (dependency_failed: that
-- step runs again, ledgerflow.retry_workflow_step). A payment step's failure is retried by syncing the invoice (it
-- carries its payments); a complete-draft step runs again, now and first.
CREATE FUNCTION ledgerflow.retry_failed_event(connection_id bigint, invoice_id text) RETURNS jsonb
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    p_connection bigint := retry_failed_event.connection_id;
    p_invoice text := retry_failed_event.invoice_id;
    last ledgerflow.sync_events;
    c ledgerflow.connections;
    v_job bigint;
    v_step record;
BEGIN
    SELECT * INTO last FROM ledgerflow.sync_events e
    WHERE e.connection_id = p_connection AND e.invoice_id = p_invoice AND e.status NOT IN ('skipped', 'superseded')
    ORDER BY e.id DESC LIMIT 1;
    IF NOT FOUND THEN
        PERFORM ledgerflow.face_error('55000', 'nothing to retry: this invoice has not been synced yet',
                                      jsonb_build_object('kind', 'not_allowed'));
    END IF;
    IF last.status = 'pending' AND last.error_class = 'dependency_failed' THEN
        -- The sync waits for a chain step that failed (its customer): run
        -- every such step again; the invoice's own step follows it.
        FOR v_step IN
            SELECT DISTINCT f.run_id, f.position
            FROM ledgerflow.workflow_steps b
            JOIN ledgerflow.workflow_steps f ON f.run_id = b.run_id AND f.status = 'failed'
            WHERE b.status = 'blocked' AND b.payload ->> 'invoice_id' = p_invoice
              AND b.payload ->> 'connection_id' = p_connection::text
            ORDER BY f.run_id, f.position
        LOOP
            v_job := coalesce(v_job, ledgerflow.retry_workflow_step(v_step.run_id, v_step.position));
        END LOOP;
        IF v_job IS NOT NULL THEN
            RETURN ledgerflow.recorded(last.id, 'pending', NULL, NULL, v_job);
        END IF;
    END IF;
    IF last.status <> 'failed' THEN
        PERFORM ledgerflow.face_error('55000', format('nothing to retry: the last sync is %s, not failed', last.status),
                                      jsonb_build_object('kind', 'not_allowed'));
    END IF;
    IF last.operation <> 'complete_draft' THEN
        RETURN ledgerflow.ledger_manual(p_connection, p_invoice, 'manual_retry',
            CASE WHEN last.operation = 'payment' THEN 'upsert' ELSE last.operation END, last.void_existing, last.id);
    END IF;
    c := ledgerflow.ledger_connection(p_connection);
    PERFORM 1 FROM ledgerflow.invoice_sync s WHERE s.connection_id = p_connection AND s.invoice_id = p_invoice FOR UPDATE;
    v_job := ledgerflow.enqueue(kind => 'complete-draft',
        payload => jsonb_build_object('tenant', c.tenant_id, 'connection_id', c.id, 'invoice_id', p_invoice),
        queue => 'default', priority => 1::smallint, tenant => c.tenant_id, run_at => now(),
        unique_key => format('sync:%s:%s', c.id, p_invoice), kind_version => 1,
        hold_key => format('connection:%s', c.id));
    PERFORM ledgerflow.ledger_expedite(c.id, p_invoice, v_job);
    RETURN ledgerflow.recorded(last.id, 'pending', NULL, NULL, v_job);
END;
$$;

-- The invoice's own auto-sync switch (may be set before the first trigger).
-- Returns the dialog's auto_sync block: the state now in effect.
CREATE FUNCTION ledgerflow.set_invoice_auto_sync(connection_id bigint, invoice_id text, enabled boolean) RETURNS jsonb
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM ledgerflow.ledger_connection(set_invoice_auto_sync.connection_id);
    INSERT INTO ledgerflow.invoice_sync AS s (connection_id, invoice_id, auto_sync)
    VALUES (set_invoice_auto_sync.connection_id, set_invoice_auto_sync.invoice_id, set_invoice_auto_sync.enabled)
    ON CONFLICT (connection_id, invoice_id) DO UPDATE SET auto_sync = excluded.auto_sync, updated_at = now();
    RETURN ledgerflow.sync_dialog(set_invoice_auto_sync.connection_id, set_invoice_auto_sync.invoice_id, 1) -> 'auto_sync';
END;
$$;

-- ---------------------------------------------------------------------
-- The sync dialog's read side (read.rs's types describe each field).
-- ---------------------------------------------------------------------

-- One sync event as the dialog shows it.
CREATE FUNCTION ledgerflow.sync_event_view(e ledgerflow.sync_events) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'id', e.id, 'trigger', e.trigger, 'trigger_label', e.trigger_label, 'status', e.status,
        'skip_reason', e.skip_reason, 'skip_message', e.skip_message, 'operation', e.operation,
        'void_existing', e.void_existing, 'job_id', e.job_id, 'attempts', e.attempts,
        -- A payment step's summary holds payments only, no invoice write.
        'response_summary', CASE WHEN e.response_summary ? 'write' THEN e.response_summary - 'payments' END,
        'payments', coalesce(nullif(e.response_summary -> 'payments', 'null'), '[]'),
        'change_details', e.change_details,
        -- What a re-sync did before its push (the column comes with a later
        -- migration, so it is read off the row as JSON).
        'resync', to_jsonb(e) -> 'resync_report',
        'error', CASE WHEN e.error_class IS NOT NULL AND e.error_message IS NOT NULL THEN
                     jsonb_build_object('class', e.error_class, 'message', e.error_message, 'raw', e.raw_error) END,
        'superseded_by', e.superseded_by, 'retry_of', e.retry_of,
        'created_at', ledgerflow.rfc3339(e.created_at), 'started_at', ledgerflow.rfc3339(e.started_at),
        'finished_at', ledgerflow.rfc3339(e.finished_at))
$$;

-- One page of an invoice's history, newest first: the `history_limit`
-- events older than `before` (an id from next_cursor), or the newest.
CREATE FUNCTION ledgerflow.sync_history(connection_id bigint, invoice_id text, before bigint DEFAULT NULL,
                                        history_limit integer DEFAULT 10) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    WITH page AS (
        SELECT e FROM ledgerflow.sync_events e
        WHERE e.connection_id = sync_history.connection_id AND e.invoice_id = sync_history.invoice_id
          AND (sync_history.before IS NULL OR e.id < sync_history.before)
        ORDER BY e.id DESC LIMIT greatest(sync_history.history_limit, 1) + 1
    ), numbered AS (
        SELECT e, row_number() OVER (ORDER BY (e).id DESC) AS n FROM page
    )
    SELECT jsonb_build_object(
        'events', coalesce((SELECT jsonb_agg(ledgerflow.sync_event_view(e) ORDER BY n) FROM numbered
                            WHERE n <= greatest(sync_history.history_limit, 1)), '[]'),
        'next_cursor', (SELECT (e).id FROM numbered WHERE n = greatest(sync_history.history_limit, 1)
                        AND EXISTS (SELECT 1 FROM numbered WHERE n > greatest(sync_history.history_limit, 1))))
$$;

-- The provider's record linked to a host record, or NULL. An invoice's last
-- pull is the later of its own and the connection's last complete pull
-- (the same rule as inbound::last_pull_at).
CREATE FUNCTION ledgerflow.link_view(p_connection_id bigint, p_entity_type text, p_host_id text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('external_id', l.external_id, 'external_number', l.external_number,
               'url', l.view_url, 'last_push_at', ledgerflow.rfc3339(l.last_push_at),
               'last_pull_at', ledgerflow.rfc3339(CASE WHEN l.entity_type = 'invoice'
                                                       THEN greatest(l.last_pull_at, c.pulled_through)
                                                       ELSE l.last_pull_at END))
    FROM ledgerflow.links l
    LEFT JOIN ledgerflow.inbound_cursors c ON c.connection_id = l.connection_id
    WHERE l.connection_id = p_connection_id AND l.entity_type = p_entity_type AND l.host_id = p_host_id
$$;

-- Everything the sync dialog shows for one invoice on one connection: the
-- JSON of `ledgerflow invoice status --json`.
CREATE FUNCTION ledgerflow.sync_dialog(connection_id bigint, invoice_id text, history_limit integer DEFAULT 10)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    p_connection bigint := sync_dialog.connection_id;
    p_invoice text := sync_dialog.invoice_id;
    c ledgerflow.connections := ledgerflow.ledger_connection(p_connection);
    v_toggle boolean := true;   -- an invoice never seen has the default: on
    v_known boolean := false;
    last ledgerflow.sync_events;
    v_status text := 'not_sent';
    v_external jsonb := ledgerflow.link_view(p_connection, 'invoice', p_invoice);
    v_master boolean := ledgerflow.setting(c.settings, '{auto_sync}', false);
    v_display text := ledgerflow.provider_display_name(c.provider);
    v_usable boolean := c.status <> 'disabled';
    v_waits_on_step boolean;
    v_has_worker boolean;
    v_waiting text;
    v_pause ledgerflow.connection_pauses;
BEGIN
    SELECT * INTO v_pause FROM ledgerflow.connection_pauses cp WHERE cp.connection_id = p_connection;
    SELECT s.auto_sync, s.latest_snapshot IS NOT NULL INTO v_toggle, v_known
    FROM ledgerflow.invoice_sync s WHERE s.connection_id = p_connection AND s.invoice_id = p_invoice;
    IF NOT FOUND THEN
        v_toggle := true;
        v_known := false;
    END IF;
    SELECT * INTO last FROM ledgerflow.sync_events e
    WHERE e.connection_id = p_connection AND e.invoice_id = p_invoice AND e.status NOT IN ('skipped', 'superseded')
    ORDER BY e.id DESC LIMIT 1;
    IF FOUND THEN
        v_status := last.status;
    END IF;
    v_waits_on_step := v_status = 'pending' AND last.error_class = 'dependency_failed'
                       AND last.error_message IS NOT NULL;
    IF v_status = 'pending' AND v_usable THEN
        -- A pending sync no running worker can run says why it waits
        -- (ledgerflow.workers, migration 20261206000024_worker_presence.sql;
        -- PL/pgSQL resolves the call when it runs, after every migration).
        v_has_worker := ledgerflow.provider_has_worker(c.provider);
        v_waiting := CASE
            WHEN v_has_worker THEN NULL
            WHEN NOT v_has_worker THEN format('waiting for a worker configured for %s: the running workers have no %s app set up',
                                              v_display, v_display)
            ELSE 'waiting for a worker: no ledgerflow worker is running' END;
    END IF;
    -- A connection an operator paused holds its syncs (console / `ledgerflow
    -- connection pause`): that is why a pending sync waits, whatever the workers.
    IF v_status = 'pending' AND v_usable AND v_pause.connection_id IS NOT NULL THEN
        v_waiting := format('syncs to %s on this connection are paused by an operator (%s)',
                            v_display, v_pause.reason);
    END IF;
    RETURN jsonb_build_object(
        'connection_id', c.id, 'provider', c.provider, 'connection_status', c.status,
        'connection_status_reason', c.status_reason, 'invoice_id', p_invoice, 'status', v_status,
        -- The error of the last sync when it failed, or of the last attempt of a pending one.
        'last_error', CASE WHEN last.status IN ('failed', 'pending') THEN ledgerflow.sync_event_view(last) -> 'error' END,
        'external', v_external,
        'auto_sync', jsonb_build_object(
            'state', CASE WHEN NOT v_usable THEN 'connection_disabled' WHEN NOT v_toggle THEN 'off_for_invoice'
                          WHEN NOT v_master THEN 'paused_disabled_in_settings' ELSE 'on' END,
            'invoice_toggle', v_toggle, 'master_toggle', v_master,
            'reason', CASE WHEN NOT v_usable THEN format('the %s connection is disabled', v_display)
                           WHEN NOT v_toggle THEN 'auto-sync is off for this invoice'
                           WHEN NOT v_master THEN format('paused (disabled in settings): automatic sync to %s is off in the integration settings', v_display)
                      END),
        'history', ledgerflow.sync_history(p_connection, p_invoice, NULL, history_limit),
        'actions', jsonb_build_object(
            'resync', v_known AND v_usable, 'send_as_new', v_known AND v_usable,
            'void_existing_option', v_known AND v_usable AND v_external IS NOT NULL,
            'retry', v_usable AND (v_status = 'failed' OR coalesce(v_waits_on_step, false)),
            'approve', v_status = 'awaiting_approval', 'withdraw', v_status = 'approved',
            'toggle_auto_sync', true,
            'reconnect', c.status = 'reconnect_needed', 'view_url', v_external -> 'url'),
        'waiting_for_worker', v_waiting,
        -- A synced payment locks the lines (ledgerflow.invoice_lock, migration
        -- 20261207000020_single_invoice_sync.sql; resolved when it runs).
        'lock', ledgerflow.invoice_lock(p_connection, p_invoice));
END;
$$;
