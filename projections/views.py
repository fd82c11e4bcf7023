"""The metric views of DESIGN.md §6, as SQL over the insight tables.

Names and columns are a contract. Views are re-created at every start (not versioned)
because they embed settings (the production and incident patterns): change a setting,
restart the worker, and the metrics follow. Every read of a table goes through
``FINAL``, so redelivered and replayed rows count once.
"""

from __future__ import annotations

# The aggregates of the per-repository views, shared with the insights page, which applies
# them to a time window of the same per-row views: one definition of each number.
CHANGE_FAILURE_AGGREGATES = (
    "count() AS deployments, toUInt64(sum(failed)) AS failed_deployments, "
    "failed_deployments / deployments AS change_failure_rate"
)
CI_AGGREGATES = (
    "count() AS runs, toUInt64(sum(success)) AS successes, successes / runs AS success_rate, "
    "quantileExact(0.5)(duration_seconds) AS p50_seconds, "
    "quantileExact(0.9)(duration_seconds) AS p90_seconds"
)


def sql_string(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def person(identity: str, account: str, login: str) -> str:
    """Who a fact row's account is, joined late (DESIGN.md §8): the linked platform user,
    else the account's latest login, else the login on the row; bots are nobody (NULL).
    ``identity`` is a LEFT JOINed ``identity_current``."""
    return (
        f"if({identity}.is_bot = 1 OR endsWith({login}, '[bot]'), NULL, "
        f"coalesce({identity}.platform_user, nullIf({identity}.github_login, ''), {login}))"
    )


def view_statements(production_pattern: str, incident_pattern: str) -> list[str]:
    prod, incident = sql_string(production_pattern), sql_string(incident_pattern)
    return [
        # The identity worker's latest answer per account: who it is now.
        """CREATE OR REPLACE VIEW identity_current AS
SELECT github_user_id, argMax(github_login, version) AS github_login,
       nullIf(argMax(platform_user, version), '') AS platform_user,
       argMax(arrayStringConcat(roles, ','), version) AS role,
       nullIf(argMax(source, version), '') AS source,
       argMax(is_bot, version) AS is_bot
FROM identities WHERE kind = 'resolved'
GROUP BY github_user_id""",
        # Organization, team and repository membership now, from the learned facts.
        """CREATE OR REPLACE VIEW identity_memberships AS
SELECT github_user_id, scope, argMax(github_login, (at, event_id)) AS github_login
FROM identities WHERE kind = 'membership'
GROUP BY github_user_id, scope
HAVING argMax(active, (at, event_id)) = 1""",
        # One row per production deployment that succeeded: the first success counts.
        f"""CREATE OR REPLACE VIEW dora_deployments AS
SELECT d.repository_id AS repository_id, d.repository AS repository,
       d.deployment_id AS deployment_id, d.sha AS sha, d.environment AS environment,
       s.deployed_at AS deployed_at
FROM (SELECT * FROM deployments FINAL) AS d
INNER JOIN (
    SELECT repository_id, deployment_id, min(created_at) AS deployed_at
    FROM deployment_statuses FINAL WHERE state = 'success'
    GROUP BY repository_id, deployment_id
) AS s ON s.repository_id = d.repository_id AND s.deployment_id = d.deployment_id
WHERE match(d.environment, {prod})""",
        """CREATE OR REPLACE VIEW dora_deployment_frequency AS
SELECT repository, toDate(deployed_at) AS day, count() AS deployments
FROM dora_deployments GROUP BY repository, day""",
        # Merged pull requests with their first commit and the deployment that shipped them.
        """CREATE OR REPLACE VIEW dora_changes AS
WITH changes AS (
    SELECT repository_id, repository, number AS pr_number, author_login, author_id,
           merge_commit_sha, assumeNotNull(merged_at) AS merge_time, created_at,
           base_ref, head_ref
    FROM pull_requests FINAL WHERE merged_at IS NOT NULL
),
head_commits AS (
    SELECT ch.repository_id AS repository_id, ch.pr_number AS pr_number,
           min(c.timestamp) AS first_commit_at
    FROM changes AS ch
    INNER JOIN (SELECT repository_id, ref, timestamp, pushed_at FROM commits FINAL) AS c
        ON c.repository_id = ch.repository_id AND c.ref = concat('refs/heads/', ch.head_ref)
    WHERE c.pushed_at <= ch.merge_time
    GROUP BY repository_id, pr_number
),
base_shas AS (
    SELECT ch.repository_id AS repository_id, ch.pr_number AS pr_number,
           groupUniqArray(c.sha) AS shas
    FROM changes AS ch
    INNER JOIN (SELECT repository_id, ref, sha, pushed_at FROM commits FINAL) AS c
        ON c.repository_id = ch.repository_id AND c.ref = concat('refs/heads/', ch.base_ref)
    WHERE c.pushed_at >= ch.merge_time
    GROUP BY repository_id, pr_number
),
shipped AS (
    SELECT ch.repository_id AS repository_id, ch.pr_number AS pr_number,
           argMin(d.deployment_id, d.deployed_at) AS deployment_id,
           min(d.deployed_at) AS deployed_at
    FROM changes AS ch
    LEFT JOIN base_shas AS b ON b.repository_id = ch.repository_id AND b.pr_number = ch.pr_number
    INNER JOIN dora_deployments AS d ON d.repository_id = ch.repository_id
    WHERE d.deployed_at >= ch.merge_time
      AND (empty(b.shas) OR d.sha = ch.merge_commit_sha OR has(b.shas, d.sha))
    GROUP BY repository_id, pr_number
)
SELECT ch.repository AS repository, ch.repository_id AS repository_id,
       ch.pr_number AS pr_number, ch.author_login AS author_login, ch.author_id AS author_id,
       ch.merge_commit_sha AS merge_commit_sha, ch.created_at AS opened_at,
       if(h.pr_number = 0, NULL, h.first_commit_at) AS first_pushed_commit_at,
       if(h.pr_number = 0, ch.created_at, h.first_commit_at) AS first_commit_at,
       ch.merge_time AS merged_at,
       if(s.pr_number = 0, NULL, s.deployment_id) AS deployment_id,
       if(s.pr_number = 0, NULL, s.deployed_at) AS deployed_at
FROM changes AS ch
LEFT JOIN head_commits AS h ON h.repository_id = ch.repository_id AND h.pr_number = ch.pr_number
LEFT JOIN shipped AS s ON s.repository_id = ch.repository_id AND s.pr_number = ch.pr_number""",
        f"""CREATE OR REPLACE VIEW dora_lead_time AS
SELECT c.repository AS repository, c.pr_number AS pr_number,
       c.merge_commit_sha AS merge_commit_sha, c.deployment_id AS deployment_id,
       c.first_commit_at AS first_commit_at, c.merged_at AS merged_at,
       c.deployed_at AS deployed_at,
       dateDiff('second', c.first_commit_at, c.deployed_at) AS lead_time_seconds,
       c.author_id AS author_id, c.author_login AS author_login,
       {person("ic", "c.author_id", "c.author_login")} AS person
FROM dora_changes AS c
LEFT JOIN identity_current AS ic ON ic.github_user_id = c.author_id
WHERE c.deployment_id IS NOT NULL""",
        # Incidents, each attributed to the last production deployment before it opened.
        f"""CREATE OR REPLACE VIEW dora_incidents AS
WITH incidents AS (
    SELECT repository_id, repository, number AS issue_number, created_at, closed_at
    FROM issues FINAL WHERE arrayExists(l -> match(l, {incident}), labels)
),
attributed AS (
    SELECT i.repository_id AS repository_id, i.issue_number AS issue_number,
           argMax(d.deployment_id, d.deployed_at) AS deployment_id
    FROM incidents AS i INNER JOIN dora_deployments AS d ON d.repository_id = i.repository_id
    WHERE d.deployed_at <= i.created_at
    GROUP BY repository_id, issue_number
)
SELECT i.repository AS repository, i.repository_id AS repository_id,
       i.issue_number AS issue_number, i.created_at AS opened_at, i.closed_at AS closed_at,
       if(a.issue_number = 0, NULL, a.deployment_id) AS deployment_id
FROM incidents AS i
LEFT JOIN attributed AS a
    ON a.repository_id = i.repository_id AND a.issue_number = i.issue_number""",
        # One row per production deployment: failed when an incident is attributed to it.
        """CREATE OR REPLACE VIEW dora_deployment_outcomes AS
SELECT d.repository AS repository, d.repository_id AS repository_id,
       d.deployment_id AS deployment_id, d.sha AS sha, d.deployed_at AS deployed_at,
       ifNull(f.incidents, 0) AS incidents, toUInt8(incidents > 0) AS failed
FROM dora_deployments AS d
LEFT JOIN (
    SELECT repository_id, deployment_id AS failed_id, count() AS incidents
    FROM dora_incidents WHERE deployment_id IS NOT NULL
    GROUP BY repository_id, failed_id
) AS f ON f.repository_id = d.repository_id AND f.failed_id = d.deployment_id""",
        f"""CREATE OR REPLACE VIEW dora_change_failure_rate AS
SELECT repository, {CHANGE_FAILURE_AGGREGATES}
FROM dora_deployment_outcomes GROUP BY repository""",
        """CREATE OR REPLACE VIEW dora_time_to_restore AS
SELECT repository, issue_number, opened_at, closed_at,
       dateDiff('second', opened_at, closed_at) AS restore_seconds, deployment_id
FROM dora_incidents WHERE closed_at IS NOT NULL""",
        # Where pull requests wait. The first review is the first by neither the author
        # nor a bot.
        f"""CREATE OR REPLACE VIEW pr_flow AS
WITH first_reviews AS (
    SELECT repository_id, pr_number, min(submitted_at) AS first_review_at
    FROM pull_request_reviews FINAL
    WHERE reviewer_id != pr_author_id AND NOT reviewer_is_bot AND submitted_at IS NOT NULL
    GROUP BY repository_id, pr_number
),
prs AS (
    SELECT p.repository AS repository, p.repository_id AS repository_id,
           p.number AS pr_number, p.author_login AS author_login, p.author_id AS author_id,
           p.created_at AS opened_at,
           p.merged_at AS merged_at, p.closed_at AS closed_at, p.state AS state,
           p.title AS title, c.first_pushed_commit_at AS first_pushed_commit_at,
           c.first_commit_at AS first_commit_at, c.deployed_at AS deployed_at
    FROM (SELECT * FROM pull_requests FINAL) AS p
    LEFT JOIN dora_changes AS c ON c.repository_id = p.repository_id AND c.pr_number = p.number
)
SELECT p.repository AS repository, p.pr_number AS pr_number, p.author_login AS author_login,
       if(p.first_pushed_commit_at IS NULL, NULL,
          dateDiff('second', assumeNotNull(p.first_pushed_commit_at), p.opened_at))
           AS coding_seconds,
       if(r.pr_number = 0, NULL, dateDiff('second', p.opened_at, r.first_review_at))
           AS pickup_seconds,
       if(r.pr_number = 0 OR p.merged_at IS NULL, NULL,
          dateDiff('second', r.first_review_at, assumeNotNull(p.merged_at))) AS review_seconds,
       if(p.deployed_at IS NULL OR p.merged_at IS NULL, NULL,
          dateDiff('second', assumeNotNull(p.merged_at), assumeNotNull(p.deployed_at)))
           AS deploy_seconds,
       if(p.deployed_at IS NULL, NULL,
          dateDiff('second', assumeNotNull(p.first_commit_at), assumeNotNull(p.deployed_at)))
           AS cycle_seconds,
       p.title AS title, p.state AS state, p.opened_at AS opened_at, p.merged_at AS merged_at,
       p.closed_at AS closed_at, p.deployed_at AS deployed_at, p.author_id AS author_id,
       {person("ic", "p.author_id", "p.author_login")} AS person
FROM prs AS p
LEFT JOIN first_reviews AS r ON r.repository_id = p.repository_id AND r.pr_number = p.pr_number
LEFT JOIN identity_current AS ic ON ic.github_user_id = p.author_id""",
        # What each person did: their pull requests (any of their accounts) and reviews.
        f"""CREATE OR REPLACE VIEW person_activity AS
WITH activity AS (
    SELECT author_id AS account, author_login AS login, 1 AS opened,
           toUInt8(merged_at IS NOT NULL) AS merged, 0 AS reviewed, cycle_seconds AS cycle
    FROM pr_flow
    UNION ALL
    SELECT reviewer_id, reviewer_login, 0, 0, 1, CAST(NULL, 'Nullable(Int64)')
    FROM pull_request_reviews FINAL WHERE NOT reviewer_is_bot
)
SELECT person, toUInt64(sum(opened)) AS prs_opened, toUInt64(sum(merged)) AS prs_merged,
       toUInt64(sum(reviewed)) AS reviews_given,
       quantileExactInclusive(0.5)(cycle) AS median_cycle_seconds
FROM (
    SELECT {person("ic", "a.account", "a.login")} AS person, a.opened AS opened,
           a.merged AS merged, a.reviewed AS reviewed, a.cycle AS cycle
    FROM activity AS a LEFT JOIN identity_current AS ic ON ic.github_user_id = a.account
)
WHERE person IS NOT NULL
GROUP BY person""",
        # Completed workflow runs, the latest attempt of each run id.
        """CREATE OR REPLACE VIEW ci_runs AS
SELECT repository, repository_id, run_id, workflow, attempts AS run_attempt,
       final_conclusion AS conclusion, started_at, duration_seconds,
       toUInt8(final_conclusion = 'success') AS success
FROM (
    SELECT repository, repository_id, run_id, argMax(name, run_attempt) AS workflow,
           max(run_attempt) AS attempts, argMax(conclusion, run_attempt) AS final_conclusion,
           argMax(assumeNotNull(run_started_at), run_attempt) AS started_at,
           argMax(dateDiff('second', assumeNotNull(run_started_at), updated_at), run_attempt)
               AS duration_seconds
    FROM workflow_runs FINAL
    WHERE status = 'completed' AND run_started_at IS NOT NULL
    GROUP BY repository, repository_id, run_id
)""",
        f"""CREATE OR REPLACE VIEW ci_health AS
SELECT repository, workflow, {CI_AGGREGATES}
FROM ci_runs GROUP BY repository, workflow""",
    ]
