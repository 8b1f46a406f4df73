{#- Per-market statistics over every event in the feature store (the training window). Volatility is
    rounded to 12 decimals: DuckDB's parallel sums may differ in the last bit between runs, and a class
    boundary must not depend on that. -#}
select
    market_ticker,
    count(*) as events,
    count(distinct event_date) as active_days,
    min(event_time_ms) as first_event_ms,
    max(event_time_ms) as last_event_ms,
    round(avg(ob_yes_mid_prob), 12) as mean_yes_mid_prob,
    round(coalesce(stddev_pop(ob_yes_mid_prob), 0), 12) as volatility,
    arg_max(ob_yes_mid_prob, event_time_ms) as last_yes_mid_prob,
    round(avg(ob_yes_spread_prob), 12) as mean_yes_spread_prob,
    round(avg(case when book_valid then 1.0 else 0.0 end), 12) as valid_share
from {{ ref('stg_features__events') }}
group by market_ticker
