{{ config(materialized='external', options={'partition_by': 'trade_date', 'overwrite_or_ignore': true}) }}
{#- Daily trade-flow aggregates per market. Partitioned: Dagster passes the half-open window
    [min_date, max_date) of the partitions it materializes. -#}
select
    market_ticker,
    count(*) as trades,
    sum(contracts) as contracts,
    sum(case when taker_side = 'yes' then contracts else 0 end) as yes_taker_contracts,
    sum(case when taker_side = 'no' then contracts else 0 end) as no_taker_contracts,
    (sum(case when taker_side = 'yes' then contracts else 0 end)
        - sum(case when taker_side = 'no' then contracts else 0 end)) / sum(contracts)::double as net_taker_flow,
    sum(case when contracts >= 100 then contracts else 0 end) / sum(contracts)::double as large_trade_share,
    sum(contracts * yes_price_cents) / sum(contracts)::double as vwap_yes_cents,
    min(trade_ts_ms) as first_trade_ts_ms,
    max(trade_ts_ms) as last_trade_ts_ms,
    trade_date
from {{ ref('stg_raw__trades') }}
where trade_date >= '{{ var("min_date") }}' and trade_date < '{{ var("max_date") }}'
group by market_ticker, trade_date
