{#- Per-market statistics over every event in the feature store (the training window). -#}
select
    market_ticker,
    count(*) as events,
    count(distinct event_date) as active_days,
    min(event_time_ms) as first_event_ms,
    max(event_time_ms) as last_event_ms,
    avg(ob_yes_mid_prob) as mean_yes_mid_prob,
    coalesce(stddev_pop(ob_yes_mid_prob), 0) as volatility,
    arg_max(ob_yes_mid_prob, event_time_ms) as last_yes_mid_prob,
    avg(ob_yes_spread_prob) as mean_yes_spread_prob,
    avg(case when book_valid then 1.0 else 0.0 end) as valid_share
from {{ ref('stg_features__events') }}
group by market_ticker
