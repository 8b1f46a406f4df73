{#- Generic tests written in the project: the dbt package hub is unreachable from these machines. -#}

{% test value_between(model, column_name, low=none, high=none) %}
select {{ column_name }}
from {{ model }}
where {{ column_name }} is not null
  and (
      {% if low is not none %} {{ column_name }} < {{ low }} {% else %} false {% endif %}
      or {% if high is not none %} {{ column_name }} > {{ high }} {% else %} false {% endif %}
  )
{% endtest %}

{% test one_split_per_market(model, column_name, split_column='split') %}
{#- Split disjointness: a market that appears under two splits is a failure row. -#}
select {{ column_name }}, count(distinct {{ split_column }}) as splits
from {{ model }}
group by 1
having count(distinct {{ split_column }}) > 1
{% endtest %}

{% test rows_match_distinct(model, other, other_column, column_name=none) %}
{#- Row-count reconciliation: one row here for each distinct value of other_column in `other`. -#}
with here as (select count(*) as n from {{ model }}),
     there as (select count(distinct {{ other_column }}) as n from {{ other }})
select here.n as model_rows, there.n as expected_rows
from here, there
where here.n != there.n
{% endtest %}

{% test split_shares_near_target(model, column_name, tolerance=0.03, min_markets=100) %}
{#- Each split's share within `tolerance` of its target (features.splits) once there are enough markets. -#}
with counts as (
    select {{ column_name }} as split, count(*) as n, sum(count(*)) over () as total
    from {{ model }} group by 1
), targets as (
    select * from (values
    {%- for split in kfs_vocabulary('splits') %}
        ('{{ split }}', {{ kfs_split_share(split) }}){{ "," if not loop.last }}
    {%- endfor %}
    ) t(split, share)
)
select targets.split, coalesce(counts.n, 0) as n, targets.share
from targets left join counts using (split)
where coalesce(counts.total, 0) >= {{ min_markets }}
  and abs(coalesce(counts.n, 0) / counts.total - targets.share) > {{ tolerance }}
{% endtest %}

{% test row_count_equal(model, other, column_name=none) %}
{#- Row-count reconciliation: a view over a table must not gain or lose rows. -#}
with here as (select count(*) as n from {{ model }}),
     there as (select count(*) as n from {{ other }})
select here.n as model_rows, there.n as expected_rows
from here, there
where here.n != there.n
{% endtest %}

{% test accepted_kfs_values(model, column_name, vocabulary) %}
{#- accepted_values with the list owned by Python (categories, volatility classes, splits). -#}
select {{ column_name }}
from {{ model }}
where {{ column_name }} is not null
  and {{ column_name }} not in ({{ "'" ~ kfs_vocabulary(vocabulary) | join("', '") ~ "'" }})
{% endtest %}
