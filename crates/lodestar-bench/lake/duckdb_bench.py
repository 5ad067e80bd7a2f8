"""The `lake` benchmark's DuckDB side: the metrics of lodestar.yaml as hand-written SQL, one
query per metric, over the same Parquet files. Run by `lodestar-bench lake` in a virtual
environment it creates; prints one JSON object on stdout.

usage: duckdb_bench.py DATA_DIR THREADS MEMORY_LIMIT RUNS [FROM TO]
FROM (inclusive) and TO (exclusive) are Monday dates bounding the weeks to compute.
"""

import json
import resource
import statistics
import sys
import time

import duckdb

# One query per metric: `{range}` bounds the metric's time column (and, as a hand-written
# query over a dt-partitioned lake would, the `dt` folders), `{cohorts}` the retention cohorts.
QUERIES = {
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
    # No value while the cohort can still change by the end of the data.
    "d7_retention": """
        WITH cohort AS (
          SELECT user_id AS e, min(signed_up_at) AS t0 FROM users
          WHERE user_id IS NOT NULL GROUP BY 1
        ),
        data_end AS (SELECT max(event_time) AS t_end FROM events),
        u AS (
          SELECT c.e, c.t0, date_trunc('week', c.t0) AS p, bool_or(a.user_id IS NOT NULL) AS retained
          FROM cohort c LEFT JOIN events a
            ON a.user_id = c.e AND a.event_time >= c.t0 + INTERVAL 7 DAY
           AND a.event_time < c.t0 + INTERVAL 14 DAY
          GROUP BY c.e, c.t0
        )
        SELECT CAST(u.p AS DATE) AS period,
          CASE WHEN max(u.t0) + INTERVAL 14 DAY <= max(d.t_end)
                AND u.p + INTERVAL 7 DAY <= max(d.t_end)
            THEN CAST(count(*) FILTER (WHERE u.retained) AS DOUBLE) / count(*) END AS value
        FROM u CROSS JOIN data_end d WHERE true {range_t0} GROUP BY u.p""",
}


def ranges(lower, upper):
    if lower is None:
        return {"range_ordered_at": "", "range_event_time": "", "range_t0": ""}

    def bound(column, partition):
        text = f"AND {column} >= TIMESTAMP '{lower}' AND {column} < TIMESTAMP '{upper}'"
        if partition:
            text += f" AND dt >= '{lower}' AND dt < '{upper}'"
        return text

    return {
        "range_ordered_at": bound("ordered_at", True),
        "range_event_time": bound("event_time", True),
        "range_t0": bound("u.t0", False),
    }


def main():
    data, threads, memory_limit, runs = sys.argv[1:5]
    lower, upper = (sys.argv[5], sys.argv[6]) if len(sys.argv) > 6 else (None, None)
    con = duckdb.connect()
    con.execute(f"SET threads = {int(threads)}")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET temp_directory = '{data}/.duckdb-tmp'")
    lake = f"{data}/lake"
    con.execute(f"CREATE VIEW users AS SELECT * FROM read_parquet('{lake}/users/*.parquet')")
    for table in ("events", "orders"):
        con.execute(
            f"CREATE VIEW {table} AS SELECT * FROM "
            f"read_parquet('{lake}/{table}/*/*.parquet', hive_partitioning = true)"
        )
    queries = {name: sql.format(**ranges(lower, upper)) for name, sql in QUERIES.items()}
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
