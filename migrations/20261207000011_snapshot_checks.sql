-- Snapshot checks: whether an invoice snapshot a host sends reads and
-- keeps the rules, and the snapshot as the Rust types write it (workflows'
-- invoice module, docs/snapshot.schema.json). ledgerflow.check_snapshot is
-- what the SQL face's triggers call (and hosts may call alone); the rest
-- are its parts. Every rule and message is the Rust decoder's and
-- InvoiceSnapshot::validate's, in the same order and words.
--
-- Runs after the SQL face (20261207000009_sql_face.sql), whose values
-- (money_text, fits_i64, rfc3339_text, ...) and errors (face_error) these
-- use; the face's triggers call check_snapshot from PL/pgSQL, resolved
-- when it runs.

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
