"""The lake benchmark's DuckDB side: the metrics of a tree (lodestar.yaml for `lake`,
shapes.yaml for `shapes`) as hand-written SQL, one query per metric, over the same Parquet
files. Run by `lodestar-bench lake` in a virtual environment it creates; prints one JSON object
on stdout.

usage: duckdb_bench.py DATA_DIR TREE THREADS MEMORY_LIMIT RUNS [FROM TO]
TREE is `lake` or `shapes`. FROM (inclusive) and TO (exclusive) are Monday dates bounding the
weeks to compute. A breakdown's values are keyed `PERIOD|VALUE`.
"""

import datetime
import json
import resource
import statistics
import sys
import time

import duckdb

# One query per metric: `{range_COLUMN}` bounds the metric's time column (and, as a
# hand-written query over a dt-partitioned lake would, the `dt` folders), `{range_t0}` the
# retention cohorts, `{lookback_COLUMN}` a 28-day window's rows (three weeks before the range),
# `{range_p}` the window's periods.

def retention(after, window, activity=None):
    """A week's cohort is the users who signed up in it; retained: an activity row in
    [t0 + after, t0 + after + window) days. No value while the cohort can still change by the
    end of the data (the latest event of any type)."""
    end = after + window
    activity = f" AND {activity}" if activity else ""
    return f"""
        WITH cohort AS (
          SELECT user_id AS e, min(signed_up_at) AS t0 FROM users
          WHERE user_id IS NOT NULL GROUP BY 1
        ),
        data_end AS (SELECT max(event_time) AS t_end FROM events),
        u AS (
          SELECT c.e, c.t0, date_trunc('week', c.t0) AS p, bool_or(a.user_id IS NOT NULL) AS retained
          FROM cohort c LEFT JOIN events a
            ON a.user_id = c.e{activity}
           AND a.event_time >= c.t0 + INTERVAL {after} DAY
           AND a.event_time < c.t0 + INTERVAL {end} DAY
          GROUP BY c.e, c.t0
        )
        SELECT CAST(u.p AS DATE) AS period,
          CASE WHEN max(u.t0) + INTERVAL {end} DAY <= max(d.t_end)
                AND u.p + INTERVAL 7 DAY <= max(d.t_end)
            THEN CAST(count(*) FILTER (WHERE u.retained) AS DOUBLE) / count(*) END AS value
        FROM u CROSS JOIN data_end d WHERE true {{range_t0}} GROUP BY u.p"""


LAKE = {
    "revenue": """
        SELECT CAST(date_trunc('week', ordered_at) AS DATE) AS period, sum(amount) AS value
        FROM orders WHERE status = 'completed' {range_ordered_at} GROUP BY 1""",
    "buyers": """
        SELECT CAST(date_trunc('week', ordered_at) AS DATE) AS period,
               count(DISTINCT user_id) AS value
        FROM orders WHERE status = 'completed' {range_ordered_at} GROUP BY 1""",
    "revenue_per_buyer": """
        SELECT CAST(date_trunc('week', ordered_at) AS DATE) AS period,
               sum(amount) / count(DISTINCT user_id) AS value
        FROM orders WHERE status = 'completed' {range_ordered_at} GROUP BY 1""",
    "active_users": """
        SELECT CAST(date_trunc('week', event_time) AS DATE) AS period,
               count(DISTINCT user_id) AS value
        FROM events WHERE true {range_event_time} GROUP BY 1""",
    "searches": """
        SELECT CAST(date_trunc('week', event_time) AS DATE) AS period, count(*) AS value
        FROM events WHERE event_type = 'search' {range_event_time} GROUP BY 1""",
    # A week's cohort is the users who signed up in it; retained: active in [t0 + 7d, t0 + 14d).
    "d7_retention": retention(7, 7),
}

WEEK = "CAST(date_trunc('week', {column}) AS DATE)"


def by_listing(value, table, column, where="true"):
    """A breakdown by listing: the value per week and listing, keyed `PERIOD|LISTING`."""
    week = WEEK.format(column=column)
    return f"""
        SELECT CAST({week} AS VARCHAR) || '|' || CAST(listing_id AS VARCHAR) AS period, {value} AS value
        FROM {table} WHERE {where} {{range_{column}}} GROUP BY {week}, listing_id"""


def weekly(value, table, column, where="true"):
    week = WEEK.format(column=column)
    return f"""
        SELECT {week} AS period, {value} AS value
        FROM {table} WHERE {where} {{range_{column}}} GROUP BY 1"""


SHAPES = {
    "nights_booked": weekly("sum(nights)", "bookings", "booked_at", "status = 'confirmed'"),
    "bookers": weekly("count(DISTINCT user_id)", "bookings", "booked_at", "status = 'confirmed'"),
    "nights_per_booker": weekly(
        "sum(nights) / count(DISTINCT user_id)", "bookings", "booked_at", "status = 'confirmed'"
    ),
    "hosts_booked": weekly(
        "count(DISTINCT host_id)", "bookings", "booked_at", "status = 'confirmed'"
    ),
    "visitors": weekly("count(DISTINCT user_id)", "events", "event_time"),
    "sessions": weekly("count(DISTINCT session_id)", "events", "event_time"),
    "devices": weekly("count(DISTINCT device_id)", "events", "event_time"),
    "listing_views": weekly("count(*)", "events", "event_time", "event_type = 'view'"),
    # A week's window is the 28 days ending with it: its own week and the three before. Each
    # week's users are counted once, then shifted into the four windows they fall in.
    "visitors_28d": """
        WITH weeks AS (
          SELECT DISTINCT CAST(date_trunc('week', event_time) AS DATE) AS w, user_id
          FROM events WHERE true {lookback_event_time}
        ),
        last_week AS (SELECT max(w) AS last FROM weeks)
        SELECT w + d AS period, count(DISTINCT user_id) AS value
        FROM weeks, (SELECT CAST(range AS INTEGER) AS d FROM range(0, 28, 7)) AS shift, last_week
        WHERE w + d <= last {range_p}
        GROUP BY 1""",
    # Retained: a search in [t0 + 28d, t0 + 42d).
    "d28_retention": retention(28, 14, "a.event_type = 'search'"),
    # The breakdown by listing (10,000 values), one query per metric.
    "nights_booked by listing_id": by_listing(
        "sum(nights)", "bookings", "booked_at", "status = 'confirmed'"
    ),
    "bookers by listing_id": by_listing(
        "count(DISTINCT user_id)", "bookings", "booked_at", "status = 'confirmed'"
    ),
    "visitors by listing_id": by_listing("count(DISTINCT user_id)", "events", "event_time"),
    "listing_views by listing_id": by_listing(
        "count(*)", "events", "event_time", "event_type = 'view'"
    ),
}

TREES = {"lake": ("lake", LAKE), "shapes": ("shop", SHAPES)}


def ranges(lower, upper):
    columns = ("ordered_at", "event_time", "booked_at")
    if lower is None:
        empty = {f"range_{c}": "" for c in columns}
        empty.update({f"lookback_{c}": "" for c in columns})
        return {**empty, "range_t0": "", "range_p": ""}

    def bound(column, start, partition=True):
        text = f"AND {column} >= TIMESTAMP '{start}' AND {column} < TIMESTAMP '{upper}'"
        if partition:
            text += f" AND dt >= '{start}' AND dt < '{upper}'"
        return text

    lookback = datetime.date.fromisoformat(lower) - datetime.timedelta(days=21)
    found = {f"range_{c}": bound(c, lower) for c in columns}
    found.update({f"lookback_{c}": bound(c, lookback) for c in columns})
    return {
        **found,
        "range_t0": bound("u.t0", lower, partition=False),
        "range_p": f"AND w + d >= DATE '{lower}' AND w + d < DATE '{upper}'",
    }


def main():
    data, tree, threads, memory_limit, runs = sys.argv[1:6]
    lower, upper = (sys.argv[6], sys.argv[7]) if len(sys.argv) > 7 else (None, None)
    root, tree_queries = TREES[tree]
    con = duckdb.connect()
    con.execute(f"SET threads = {int(threads)}")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET temp_directory = '{data}/.duckdb-tmp'")
    lake = f"{data}/{root}"
    con.execute(f"CREATE VIEW users AS SELECT * FROM read_parquet('{lake}/users/*.parquet')")
    for table in ("events", "orders" if tree == "lake" else "bookings"):
        con.execute(
            f"CREATE VIEW {table} AS SELECT * FROM "
            f"read_parquet('{lake}/{table}/*/*.parquet', hive_partitioning = true)"
        )
    queries = {name: sql.format(**ranges(lower, upper)) for name, sql in tree_queries.items()}
    results = {}
    for name, sql in queries.items():  # also the warm-up run
        rows = con.execute(sql).fetchall()
        results[name] = {str(period): value for period, value in rows}
    times = []
    for _ in range(int(runs)):
        started = time.perf_counter()
        for sql in queries.values():
            con.execute(sql).fetchall()
        times.append(time.perf_counter() - started)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    json.dump(
        {
            "duckdb_version": duckdb.__version__,
            "metrics": results,
            "median_seconds": statistics.median(times),
            "peak_rss_bytes": peak_kib * 1024,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
