"""The one catalogue of what Vigie writes for people, in English and French, and how to say it.

A message id maps to a template with `{placeholders}` (str.format), or to a `Plural` whose form
is picked by a count. The health engine writes `Text` values: strings that read as English
(logs, tests, the JSON API keep working) and remember their id and parameters, so a page renders
them in the reader's language and an alert in the config's. A `Speech` is one reader's language
and time zone: pages get one per request, the alerting one from the config.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Language = Literal["en", "fr"]
LANGUAGES: tuple[Language, ...] = get_args(Language)
DEFAULT_LANGUAGE: Language = "en"
ANONYMOUS = "anonymous"
"""Who a request is from when it carries no user and no certificate (kept as is in the audit)."""


@dataclass(frozen=True, slots=True)
class Plural:
    """A message with one form for one thing and another for many; `count` names the number."""

    one: str
    other: str
    count: str = "n"


Entry = str | Plural


@dataclass(frozen=True, slots=True)
class Moment:
    """A time given to a message, shown as hours and minutes in the reader's time zone."""

    at: float


EN: dict[str, Entry] = {
    # states, as badges show them
    "state.OK": "OK",
    "state.WARNING": "WARNING",
    "state.DEGRADED": "DEGRADED",
    "state.DOWN": "DOWN",
    "state.IMPACTED": "IMPACTED",
    "state.FLAPPING": "FLAPPING",
    "state.UNKNOWN": "UNKNOWN",
    "state.BACK": "BACK",
    "state.PENDING": "PENDING",
    "state.FAILED": "FAILED",
    "state.up": "up",
    "state.down": "down",
    "state.pending": "pending",
    "severity.critical": "critical",
    "severity.warning": "warning",
    # reasons (the engine's)
    "reason.no_result": "no result from check {check}",
    "reason.rule": "{check}: {rule}: {seen}",
    "reason.rule_text": "{what} ({check}: {rule}: {seen})",
    "reason.impacted_by": "impacted by {roots}",
    "reason.flapping": "flapping: too many state changes",
    # incidents (the engine's)
    "incident.maintenance": "In a maintenance window: not paged.",
    "site.mains_lost": "mains lost at {at}, on battery",
    "site.mains_lost_exhausted": "mains lost at {at}, batteries exhausted",
    "site.mains_lost_runtime": Plural(
        "mains lost at {at}, on battery, about {n} minute of runtime left",
        "mains lost at {at}, on battery, about {n} minutes of runtime left",
    ),
    "site.mass_failure": "{n} of {members} components failing",
    "site.recovering": "recovering, {n} of {members} components still failing",
    "site.summary": "{name}: {what}; {impacted}",
    "site.summary_risk": "{name}: {what}; {impacted}, {risk}",
    "apps.impacted": Plural("{n} application impacted", "{n} applications impacted"),
    "apps.more_at_risk": "{n} more at risk",
    "component.summary": "{label} is {state}",
    "component.summary_apps": "{label} is {state}; {impacted}: {names}",
    "component.summary_redundancy": "{label} is {state}: running without redundancy",
    "app.line": "[tier {tier}] {name}: {state}",
    "app.line_degraded": "[tier {tier}] {name}: {state} - degraded mode: {mode}",
    "app.degraded": "[tier {tier}] {name}: {mode}",
    "warning.summary": "{label} is {state}",
    # page furniture
    "nav.overview": "Overview",
    "nav.recovery": "Recovery board",
    "nav.checks": "Checks",
    "page.updated": "Updated {at} · refreshes every {seconds} s",
    "page.degraded_vigie": "Vigie runs degraded, state_dir: {problem}. Detection and paging go on;"
    " a restart now would lose what is held in memory.",
    "page.replica": "Answered by {name}",
    "page.peer_alive": "{name} alive",
    "page.peer_lost": "{name} lost",
    "page.title_status": "Vigie: status",
    "page.title_incidents": Plural("{n} incident", "{n} incidents"),
    "count.open_incidents": Plural("open incident", "open incidents"),
    "count.apps_failing": Plural("application down or impacted", "applications down or impacted"),
    "count.apps_ok": Plural("application OK", "applications OK"),
    "count.back": "back after an outage",
    "h.sites": "Sites",
    "h.open_incidents": "Open incidents",
    "h.warnings": "Warnings",
    "h.apps": "Applications by criticality",
    "h.failing_checks": "Failing checks",
    "h.why": "Why",
    "h.impacted_apps": "Impacted applications ({n})",
    "h.other_impacted": "Other impacted components ({n})",
    "h.recovered": "Recovered ({n})",
    "h.timeline": "Timeline",
    "h.checks": "Checks",
    "h.checks_n": "Checks ({n})",
    "h.depends_on": "Depends on",
    "h.needed_by": "Needed by",
    "h.state_changes": "State changes",
    "h.after_outage": "Applications after an outage",
    "none.sites": "No site configured.",
    "none.incidents": "No open incident.",
    "none.apps": "No application configured.",
    "none.root": "No failing component left at the root.",
    "none.impacted": "No application impacted.",
    "none.recovered": "Nothing has come back yet.",
    "none.timeline": "No state change recorded since this Vigie started.",
    "none.checks": "No check feeds this component: its state comes from what it depends on.",
    "none.nothing": "Nothing.",
    "none.transitions": "None recorded since this Vigie started.",
    "none.board": "No application has failed since this Vigie started.",
    "col.tier": "Tier",
    "col.application": "Application",
    "col.state": "State",
    "col.since": "Since",
    "col.why_meanwhile": "Why / what to do meanwhile",
    "col.component": "Component",
    "col.why": "Why",
    "col.check": "Check",
    "col.kind": "Kind",
    "col.target": "Target",
    "col.reason": "Reason",
    "col.meanwhile": "What to do meanwhile",
    "col.team": "Team",
    "col.down_since": "Down since",
    "col.back_at": "Back at",
    "col.stable_for": "Stable for",
    "col.time": "Time",
    "col.change": "Change",
    "col.metric": "Metric",
    "col.labels": "Labels",
    "col.value": "Value",
    "col.result": "Result",
    "col.duration": "Duration",
    "w.root_cause": "Root cause:",
    "w.failing_first": "failing at the root:",
    "w.in_site": "in {site}",
    "w.since": "since {at}",
    "w.since_cap": "Since",
    "w.apps_impacted": Plural("application impacted", "applications impacted"),
    "w.maintenance": "in a maintenance window: not paged",
    "w.not_acked": "paged, not acknowledged yet",
    "w.acked_by": "acknowledged by {by} at {at}",
    "w.all_apps": "All {n} applications and what to do meanwhile",
    "w.because": "because {names} failed",
    "w.incident": "incident",
    "w.runbook": "runbook",
    "w.tier": "tier {n}",
    "w.tier_cap": "Tier {n}",
    "w.team": "team {team}",
    "w.severity": "severity {severity}",
    "w.incident_id": "Incident {id}",
    "w.meanwhile": "Meanwhile: {mode}",
    "w.no_degraded": "no degraded mode documented",
    "w.first_seen": "first seen",
    "w.mains_lost": "mains lost",
    "w.all_checks": "All checks",
    "w.metrics": "metrics",
    "w.still_down": "still down",
    "w.back": "back",
    "w.run_now": "run now",
    "w.every": "every {seconds} s",
    "w.last_result": "Last result:",
    "w.at_in": "at {at} in {seconds} s",
    "w.samples": "{n} samples",
    "w.samples_of": "{n} of {total} samples",
    "w.recent": "Recent results ({n})",
    "w.needs": "Needs {n} of:",
    "w.budget": "Detection budget: paged at worst {seconds} s after a fault",
    "w.budget_target": "(target for tier {tier}: {target} s{over})",
    "w.budget_over": ", over",
    "w.budget_terms": "= {interval} s interval + {timeout} s timeout + {for_} s for"
    " + {confirm} s confirmation + {group_wait} s group_wait, check {check}",
    "w.budget_of": "of",
    "w.budget_none": "Detection budget: none (no check can see this component fail).",
    "w.not_found": "No {what}",
    "w.incident_missing": "incident {id}",
    "w.component_missing": "component {id}",
    "w.hint_resolved": "It may have been resolved: see the recovery board.",
    "w.hint_topology": "It is not in the configured topology.",
    "w.title_not_found": "Not found",
    "w.title_incident": "Incident: {name}",
    "w.title_checks": "Vigie: checks",
    "w.title_board": "Recovery board: {back} back, {down} down",
    "w.health": "health",
    # roles, audit log, incident updates (web.operators)
    "nav.audit": "Audit log",
    "page.title_audit": "Vigie: audit log",
    "h.audit": "Operator actions",
    "h.updates": "Updates from the crisis cell",
    "none.audit": "No operator action recorded yet.",
    "none.updates": "No update posted yet.",
    "col.when": "When",
    "col.who": "Who",
    "col.role": "Role",
    "col.from": "From",
    "col.action": "Action",
    "col.detail": "Detail",
    "role.operator": "operator",
    "role.viewer": "viewer",
    "who.anonymous": "anonymous",
    "role.receiver": "on-call receiver (paged link)",
    "action.maintenance": "maintenance window opened",
    "action.reload": "configuration reloaded",
    "action.acknowledge": "incident acknowledged",
    "action.incident_update": "incident update posted",
    "w.update_by": "posted by {by}, {at}",
    "w.expected_recovery": "expected recovery: {at}",
    "form.update_text": "Post an update (what is being done, by whom)",
    "form.expected": "Expected recovery (HH:MM, optional)",
    "form.post_update": "Post the update",
    # maintenance windows: the /maintenance page, ending one early (web.maintenance)
    "nav.maintenance": "Maintenance",
    "page.title_maintenance": "Vigie: maintenance windows",
    "m.open": Plural("{n} open maintenance window", "{n} open maintenance windows"),
    "m.finished": "Recently finished",
    "m.none": "No maintenance window open: every failure pages.",
    "m.note": "During a window its target's failures are shown but not paged. A window opened"
    " on the page or the API lasts at most web.maintenance_max; those of the config file end"
    " by editing it.",
    "m.end_now": "End now",
    "m.source.api": "opened here",
    "m.source.alertmanager": "from a peer replica",
    "m.source.config": "config file",
    "m.ended_by": "ended early by {by}, {at}",
    "m.ran_out": "ended as planned",
    "col.start": "Start",
    "col.end": "End",
    "col.opened_by": "Opened by",
    "col.ended": "Ended",
    "action.maintenance_end": "maintenance window ended early",
    # durations
    "d.days": "{d}d {h}h",
    "d.hours": "{h}h {m:02d}m",
    "d.minutes": "{m}m {s:02d}s",
    "d.seconds": "{s}s",
    # the incident archive (web.archive)
    "nav.archive": "Archive",
    "a.title": "Incident archive",
    "a.title_one": "Closed incident: {name}",
    "a.from": "From",
    "a.to": "To",
    "a.all_apps": "All applications",
    "a.show": "Show",
    "a.kept": Plural(
        "{n} closed incident kept, {size} on disk; kept {days} days",
        "{n} closed incidents kept, {size} on disk; kept {days} days",
    ),
    "a.disabled": "No state_dir: closed incidents are not kept.",
    "a.closed": "Closed incidents ({n})",
    "a.started": "Started",
    "a.lasted": "Lasted",
    "a.incident": "Incident",
    "a.apps": "Applications",
    "a.none": "No closed incident in this period.",
    "a.more": "More incidents match: narrow the dates.",
    "a.closed_incident": "Closed incident",
    "a.from_to": "From {start} to {end}",
    "a.lasted_for": "lasted {d}",
    "a.paging": "Paging",
    "a.every_team": "every team",
    "a.paged_to": "Paged:",
    "a.acked": "Acknowledged by {by} at {at} (via {via})",
    "a.not_acked": "Not acknowledged.",
    "a.no_paging": "Nobody was paged for this incident.",
    "a.no_timeline": "No state change recorded.",
    "w.hint_archive": "The archive does not hold it (closed incidents are kept from their close).",
    # availability (web.availability)
    "nav.availability": "Availability",
    "av.title": "Availability",
    "av.day": "Last 24 h",
    "av.week": "Last 7 days",
    "av.month": "Last 30 days",
    "av.tiers": "By tier",
    "av.apps": "By application",
    "av.note": "Down: failing (down, impacted, flapping, degraded). Time in a maintenance window"
    " and time Vigie did not know the state are left out.",
    "av.down": "down {d}",
    "av.maint": "maintenance {d}",
    "av.disabled": "No state_dir: no history is kept, so no availability.",
    # the post-incident report (web.report)
    "r.title": "Post-incident report: {name}",
    "r.report": "Post-incident report",
    "r.start": "Start",
    "r.end": "End",
    "r.still_open": "still open",
    "r.first_failure": "First failure seen",
    "r.to_detect": "Time to detect (first failure seen to incident)",
    "r.to_page": "Time to page",
    "r.to_acknowledge": "Time to acknowledge",
    "r.to_recover": "Time to recover",
    "r.actions": "Operator actions",
    "r.no_actions": "No operator action recorded during the incident.",
    "r.print": "Print this page for a PDF.",
    "r.availability": "Availability (30 days)",
    # pictures (web.svg): restoration curve, outage bars, month strips; the PDF report
    "g.curve": "Restoration: applications back over time",
    "g.bars": "Each application: down, impacted, back",
    "g.strip": "Day by day",
    "g.tier": "Tier {n}",
    "g.no_tier": "No tier",
    "g.total": "All applications",
    "g.axis_time": "Time ({zone})",
    "g.axis_back": "Applications back",
    "g.curve_summary": Plural(
        "{back} of {n} application back at {at}", "{back} of {n} applications back at {at}"
    ),
    "g.tier_back": "{tier}: {back} of {n}",
    "g.bars_summary": Plural(
        "{n} application: {down} down, {impacted} impacted, {back} back",
        "{n} applications: {down} down, {impacted} impacted, {back} back",
    ),
    "g.down": "down",
    "g.impacted": "impacted",
    "g.back": "back",
    "g.bar_row": "{name} ({tier}): down {down}, impacted {impacted}",
    "g.bar_back": "back at {at}",
    "g.more": Plural("and {n} more application", "and {n} more applications"),
    "g.strip_summary": "{name}, {start} to {end}: {bad} of {days} days with down time,"
    " {maint} with maintenance",
    "g.day_ok": "no down time",
    "g.day_under": "down up to {d}",
    "g.day_over": "down over {d}",
    "g.maintenance": "maintenance",
    "g.no_data": "no data",
    "g.legend": "Legend of the day cells: shade by down time, a slash for maintenance",
    "r.page": "Page {n}",
    # a page's refusal of a change to a viewer (web.operators; the API answers in English)
    "forbidden.role": "Forbidden: this needs the {role} role; {who} is a {has}.",
}

FR: dict[str, Entry] = {
    "state.OK": "OK",
    "state.WARNING": "ALERTE",
    "state.DEGRADED": "DÉGRADÉ",
    "state.DOWN": "EN PANNE",
    "state.IMPACTED": "IMPACTÉ",
    "state.FLAPPING": "INSTABLE",
    "state.UNKNOWN": "INCONNU",
    "state.BACK": "RÉTABLI",
    "state.PENDING": "EN ATTENTE",
    "state.FAILED": "ÉCHEC",
    "state.up": "répond",
    "state.down": "en échec",
    "state.pending": "en attente",
    "severity.critical": "critique",
    "severity.warning": "alerte",
    "reason.no_result": "aucun résultat du contrôle {check}",
    "reason.rule": "{check} : {rule} : {seen}",
    "reason.rule_text": "{what} ({check} : {rule} : {seen})",
    "reason.impacted_by": "touché par {roots}",
    "reason.flapping": "instable : trop de changements d'état",
    "incident.maintenance": "En fenêtre de maintenance : pas d'appel d'astreinte.",
    "site.mains_lost": "secteur perdu à {at}, sur batterie",
    "site.mains_lost_exhausted": "secteur perdu à {at}, batteries épuisées",
    "site.mains_lost_runtime": Plural(
        "secteur perdu à {at}, sur batterie, environ {n} minute d'autonomie restante",
        "secteur perdu à {at}, sur batterie, environ {n} minutes d'autonomie restantes",
    ),
    "site.mass_failure": Plural(
        "{n} composant sur {members} en panne", "{n} composants sur {members} en panne"
    ),
    "site.recovering": Plural(
        "rétablissement en cours, {n} composant sur {members} encore en panne",
        "rétablissement en cours, {n} composants sur {members} encore en panne",
    ),
    "site.summary": "{name} : {what} ; {impacted}",
    "site.summary_risk": "{name} : {what} ; {impacted}, {risk}",
    "apps.impacted": Plural("{n} application touchée", "{n} applications touchées"),
    "apps.more_at_risk": Plural("{n} autre menacée", "{n} autres menacées"),
    "component.summary": "{label} : {state}",
    "component.summary_apps": "{label} : {state} ; {impacted} : {names}",
    "component.summary_redundancy": "{label} : {state}, sans redondance",
    "app.line": "[niveau {tier}] {name} : {state}",
    "app.line_degraded": "[niveau {tier}] {name} : {state} - mode dégradé : {mode}",
    "app.degraded": "[niveau {tier}] {name} : {mode}",
    "warning.summary": "{label} : {state}",
    "nav.overview": "Vue d'ensemble",
    "nav.recovery": "Tableau de reprise",
    "nav.checks": "Contrôles",
    "page.updated": "Mis à jour {at} · actualisé toutes les {seconds} s",
    "page.degraded_vigie": "Vigie fonctionne en mode dégradé, state_dir : {problem}. La détection"
    " et les appels continuent ; un redémarrage maintenant perdrait ce qui est gardé en mémoire.",
    "page.replica": "Réponse de {name}",
    "page.peer_alive": "{name} en vie",
    "page.peer_lost": "{name} perdue",
    "page.title_status": "Vigie : état",
    "page.title_incidents": Plural("{n} incident", "{n} incidents"),
    "count.open_incidents": Plural("incident en cours", "incidents en cours"),
    "count.apps_failing": Plural(
        "application en panne ou touchée", "applications en panne ou touchées"
    ),
    "count.apps_ok": Plural("application normale", "applications normales"),
    "count.back": "rétablies après une panne",
    "h.sites": "Sites",
    "h.open_incidents": "Incidents en cours",
    "h.warnings": "Alertes",
    "h.apps": "Applications par criticité",
    "h.failing_checks": "Contrôles en échec",
    "h.why": "Pourquoi",
    "h.impacted_apps": "Applications touchées ({n})",
    "h.other_impacted": "Autres composants touchés ({n})",
    "h.recovered": "Rétablis ({n})",
    "h.timeline": "Chronologie",
    "h.checks": "Contrôles",
    "h.checks_n": "Contrôles ({n})",
    "h.depends_on": "Dépend de",
    "h.needed_by": "Nécessaire à",
    "h.state_changes": "Changements d'état",
    "h.after_outage": "Applications après une panne",
    "none.sites": "Aucun site configuré.",
    "none.incidents": "Aucun incident en cours.",
    "none.apps": "Aucune application configurée.",
    "none.root": "Plus aucun composant en panne à l'origine.",
    "none.impacted": "Aucune application touchée.",
    "none.recovered": "Rien n'est encore rétabli.",
    "none.timeline": "Aucun changement d'état enregistré depuis le démarrage de Vigie.",
    "none.checks": "Aucun contrôle ne surveille ce composant : son état vient de ce dont il"
    " dépend.",
    "none.nothing": "Rien.",
    "none.transitions": "Aucun depuis le démarrage de Vigie.",
    "none.board": "Aucune application n'est tombée en panne depuis le démarrage de Vigie.",
    "col.tier": "Niveau",
    "col.application": "Application",
    "col.state": "État",
    "col.since": "Depuis",
    "col.why_meanwhile": "Pourquoi / que faire en attendant",
    "col.component": "Composant",
    "col.why": "Pourquoi",
    "col.check": "Contrôle",
    "col.kind": "Type",
    "col.target": "Cible",
    "col.reason": "Raison",
    "col.meanwhile": "Que faire en attendant",
    "col.team": "Équipe",
    "col.down_since": "En panne depuis",
    "col.back_at": "Rétablie à",
    "col.stable_for": "Stable depuis",
    "col.time": "Heure",
    "col.change": "Changement",
    "col.metric": "Métrique",
    "col.labels": "Étiquettes",
    "col.value": "Valeur",
    "col.result": "Résultat",
    "col.duration": "Durée",
    "w.root_cause": "Cause première :",
    "w.failing_first": "en panne à l'origine :",
    "w.in_site": "à {site}",
    "w.since": "depuis {at}",
    "w.since_cap": "Depuis",
    "w.apps_impacted": Plural("application touchée", "applications touchées"),
    "w.maintenance": "en fenêtre de maintenance : pas d'appel d'astreinte",
    "w.not_acked": "astreinte appelée, pas encore prise en compte",
    "w.acked_by": "pris en compte par {by} à {at}",
    "w.all_apps": "Les {n} applications et que faire en attendant",
    "w.because": "à cause de {names}",
    "w.incident": "incident",
    "w.runbook": "procédure",
    "w.tier": "niveau {n}",
    "w.tier_cap": "Niveau {n}",
    "w.team": "équipe {team}",
    "w.severity": "gravité {severity}",
    "w.incident_id": "Incident {id}",
    "w.meanwhile": "En attendant : {mode}",
    "w.no_degraded": "aucun mode dégradé documenté",
    "w.first_seen": "première observation",
    "w.mains_lost": "secteur perdu",
    "w.all_checks": "Tous les contrôles",
    "w.metrics": "métriques",
    "w.still_down": "encore en panne",
    "w.back": "rétablies",
    "w.run_now": "lancer maintenant",
    "w.every": "toutes les {seconds} s",
    "w.last_result": "Dernier résultat :",
    "w.at_in": "à {at} en {seconds} s",
    "w.samples": "{n} échantillons",
    "w.samples_of": "{n} échantillons sur {total}",
    "w.recent": "Résultats récents ({n})",
    "w.needs": "Il en faut {n} parmi :",
    "w.budget": "Délai de détection : appel au pire {seconds} s après une panne",
    "w.budget_target": "(objectif du niveau {tier} : {target} s{over})",
    "w.budget_over": ", dépassé",
    "w.budget_terms": "= intervalle {interval} s + délai {timeout} s + maintien {for_} s"
    " + confirmation {confirm} s + regroupement {group_wait} s, contrôle {check}",
    "w.budget_of": "de",
    "w.budget_none": "Délai de détection : aucun (aucun contrôle ne voit ce composant tomber).",
    "w.not_found": "Introuvable : {what}",
    "w.incident_missing": "incident {id}",
    "w.component_missing": "composant {id}",
    "w.hint_resolved": "Il est peut-être résolu : voir le tableau de reprise.",
    "w.hint_topology": "Il n'est pas dans la topologie configurée.",
    "w.title_not_found": "Introuvable",
    "w.title_incident": "Incident : {name}",
    "w.title_checks": "Vigie : contrôles",
    "w.title_board": "Tableau de reprise : {back} rétablies, {down} en panne",
    "w.health": "santé",
    "nav.audit": "Journal d'audit",
    "page.title_audit": "Vigie : journal d'audit",
    "h.audit": "Actions des opérateurs",
    "h.updates": "Points de situation de la cellule de crise",
    "none.audit": "Aucune action d'opérateur enregistrée pour l'instant.",
    "none.updates": "Aucun point de situation publié pour l'instant.",
    "col.when": "Quand",
    "col.who": "Qui",
    "col.role": "Rôle",
    "col.from": "Depuis l'adresse",
    "col.action": "Action",
    "col.detail": "Détail",
    "role.operator": "opérateur",
    "role.viewer": "lecteur",
    "who.anonymous": "anonyme",
    "role.receiver": "destinataire d'astreinte (lien reçu)",
    "action.maintenance": "fenêtre de maintenance ouverte",
    "action.reload": "configuration rechargée",
    "action.acknowledge": "incident pris en compte",
    "action.incident_update": "point de situation publié",
    "w.update_by": "publié par {by}, {at}",
    "w.expected_recovery": "retour prévu : {at}",
    "form.update_text": "Publier un point de situation (ce qui est fait, par qui)",
    "form.expected": "Retour prévu (HH:MM, facultatif)",
    "form.post_update": "Publier le point",
    # fenêtres de maintenance : la page /maintenance, en terminer une avant l'heure
    "nav.maintenance": "Maintenance",
    "page.title_maintenance": "Vigie : fenêtres de maintenance",
    "m.open": Plural("{n} fenêtre de maintenance ouverte", "{n} fenêtres de maintenance ouvertes"),
    "m.finished": "Terminées récemment",
    "m.none": "Aucune fenêtre de maintenance ouverte : toute panne déclenche l'astreinte.",
    "m.note": "Pendant une fenêtre, les pannes de sa cible sont affichées sans appeler"
    " l'astreinte. Une fenêtre ouverte sur la page ou par l'API dure au plus"
    " web.maintenance_max ; celles du fichier de configuration se terminent en le modifiant.",
    "m.end_now": "Terminer maintenant",
    "m.source.api": "ouverte ici",
    "m.source.alertmanager": "venue d'une réplique pair",
    "m.source.config": "fichier de configuration",
    "m.ended_by": "terminée avant l'heure par {by}, {at}",
    "m.ran_out": "terminée comme prévu",
    "col.start": "Début",
    "col.end": "Fin",
    "col.opened_by": "Ouverte par",
    "col.ended": "Terminée",
    "action.maintenance_end": "fenêtre de maintenance terminée avant l'heure",
    "d.days": "{d} j {h} h",
    "d.hours": "{h} h {m:02d}",
    "d.minutes": "{m} min {s:02d} s",
    "d.seconds": "{s} s",
    # l'archive des incidents (web.archive)
    "nav.archive": "Archives",
    "a.title": "Archive des incidents",
    "a.title_one": "Incident clos : {name}",
    "a.from": "Du",
    "a.to": "Au",
    "a.all_apps": "Toutes les applications",
    "a.show": "Afficher",
    "a.kept": Plural(
        "{n} incident clos conservé, {size} sur disque ; conservés {days} jours",
        "{n} incidents clos conservés, {size} sur disque ; conservés {days} jours",
    ),
    "a.disabled": "Pas de state_dir : les incidents clos ne sont pas conservés.",
    "a.closed": "Incidents clos ({n})",
    "a.started": "Début",
    "a.lasted": "Durée",
    "a.incident": "Incident",
    "a.apps": "Applications",
    "a.none": "Aucun incident clos sur cette période.",
    "a.more": "D'autres incidents correspondent : resserrez les dates.",
    "a.closed_incident": "Incident clos",
    "a.from_to": "Du {start} au {end}",
    "a.lasted_for": "durée {d}",
    "a.paging": "Appels d'astreinte",
    "a.every_team": "toutes les équipes",
    "a.paged_to": "Appelés :",
    "a.acked": "Pris en compte par {by} le {at} (via {via})",
    "a.not_acked": "Non pris en compte.",
    "a.no_paging": "Personne n'a été appelé pour cet incident.",
    "a.no_timeline": "Aucun changement d'état enregistré.",
    "w.hint_archive": "L'archive ne le contient pas (un incident est archivé à sa clôture).",
    # disponibilité (web.availability)
    "nav.availability": "Disponibilité",
    "av.title": "Disponibilité",
    "av.day": "Dernières 24 h",
    "av.week": "7 derniers jours",
    "av.month": "30 derniers jours",
    "av.tiers": "Par niveau",
    "av.apps": "Par application",
    "av.note": "Indisponible : en panne, touchée, instable ou dégradée. Le temps en fenêtre de"
    " maintenance et celui où Vigie ignorait l'état sont exclus.",
    "av.down": "indisponible {d}",
    "av.maint": "maintenance {d}",
    "av.disabled": "Pas de state_dir : aucun historique conservé, donc pas de disponibilité.",
    # le rapport post-incident (web.report)
    "r.title": "Rapport post-incident : {name}",
    "r.report": "Rapport post-incident",
    "r.start": "Début",
    "r.end": "Fin",
    "r.still_open": "toujours en cours",
    "r.first_failure": "Première panne observée",
    "r.to_detect": "Délai de détection (de la première panne à l'incident)",
    "r.to_page": "Délai d'appel d'astreinte",
    "r.to_acknowledge": "Délai de prise en compte",
    "r.to_recover": "Délai de rétablissement",
    "r.actions": "Actions des opérateurs",
    "r.no_actions": "Aucune action d'opérateur enregistrée pendant l'incident.",
    "r.print": "Imprimer cette page pour obtenir un PDF.",
    "r.availability": "Disponibilité (30 jours)",
    # images (web.svg) : courbe de reprise, barres de panne, bandes du mois ; le rapport PDF
    "g.curve": "Reprise : applications rétablies au fil du temps",
    "g.bars": "Chaque application : en panne, touchée, rétablie",
    "g.strip": "Jour par jour",
    "g.tier": "Niveau {n}",
    "g.no_tier": "Sans niveau",
    "g.total": "Toutes les applications",
    "g.axis_time": "Heure ({zone})",
    "g.axis_back": "Applications rétablies",
    "g.curve_summary": Plural(
        "{back} application rétablie sur {n} à {at}",
        "{back} applications rétablies sur {n} à {at}",
        count="back",
    ),
    "g.tier_back": "{tier} : {back} sur {n}",
    "g.bars_summary": Plural(
        "{n} application : {down} en panne, {impacted} touchée(s), {back} rétablie(s)",
        "{n} applications : {down} en panne, {impacted} touchée(s), {back} rétablie(s)",
    ),
    "g.down": "en panne",
    "g.impacted": "touchée",
    "g.back": "rétablie",
    "g.bar_row": "{name} ({tier}) : en panne {down}, touchée {impacted}",
    "g.bar_back": "rétablie à {at}",
    "g.more": Plural("et {n} autre application", "et {n} autres applications"),
    "g.strip_summary": Plural(
        "{name}, du {start} au {end} : {bad} jour sur {days} avec indisponibilité,"
        " {maint} avec maintenance",
        "{name}, du {start} au {end} : {bad} jours sur {days} avec indisponibilité,"
        " {maint} avec maintenance",
        count="bad",
    ),
    "g.day_ok": "aucune indisponibilité",
    "g.day_under": "indisponible jusqu'à {d}",
    "g.day_over": "indisponible plus de {d}",
    "g.maintenance": "maintenance",
    "g.no_data": "pas de données",
    "g.legend": "Légende des cases : teinte selon l'indisponibilité, barre oblique pour la"
    " maintenance",
    "r.page": "Page {n}",
    # le refus d'une modification à un lecteur (web.operators ; l'API répond en anglais)
    "forbidden.role": "Interdit : il faut le rôle {role} ; {who} a le rôle {has}.",
}

CATALOGUE: Mapping[Language, Mapping[str, Entry]] = {"en": EN, "fr": FR}


@functools.cache
def host_zone() -> tzinfo:
    """Return the host's local time zone (what `timezone:` defaults to), read once.

    The IANA zone of $TZ or of /etc/localtime when there is one, so summer time is followed;
    else the fixed offset the host has now.
    """
    names = [os.environ.get("TZ", "").removeprefix(":")]
    with contextlib.suppress(OSError):
        names.append(os.path.realpath("/etc/localtime").partition("zoneinfo/")[2])
    for name in filter(None, names):
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
            return ZoneInfo(name)
    zone = datetime.now().astimezone().tzinfo
    assert zone is not None  # astimezone() always sets one
    return zone


def zone_of(name: str | None) -> tzinfo:
    """Return the IANA zone of that name, the host's own when None; ValueError when unknown."""
    if name is None:
        return host_zone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (an IANA name, e.g. Europe/Paris)") from exc


class Text(str):
    """A sentence kept translatable: it reads as its English text and renders in any language.

    `own` holds the sentence's own templates by language (a rule's `text:`), used instead of
    the catalogue's entry for `key`.
    """

    key: str
    params: dict[str, object]
    own: dict[str, str]

    def __new__(cls, key: str, /, own: Mapping[str, str] | None = None, **params: object) -> Text:
        """Build the sentence `key` with its parameters; its str value is the English text."""
        own = dict(own) if own else {}
        self = super().__new__(cls, _english().render(key, own, params))
        self.key, self.params, self.own = key, params, own
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        """Copy and pickle as a Text (str's own reduction would lose the id)."""
        return (_rebuild, (self.key, self.own, self.params))


@functools.cache
def _english() -> Speech:
    """The rendering every Text's own value is: English in the host's zone (made once)."""
    return Speech("en", host_zone())


def _rebuild(key: str, own: Mapping[str, str], params: Mapping[str, object]) -> Text:
    return Text(key, own, **params)


def lines(items: tuple[str, ...]) -> Text:
    """Return lines of text (Text or plain) as one Text joined by newlines."""
    return Text("lines", items=items)


@dataclass(frozen=True, slots=True)
class Speech:
    """One reader's language and time zone: renders catalogue messages, Texts, times."""

    language: Language
    zone: tzinfo = field(default_factory=host_zone)

    def t(self, key: str, /, **params: object) -> str:
        """Render a catalogue message with its parameters."""
        return self.render(key, {}, params)

    def render(self, key: str, own: Mapping[str, str], params: Mapping[str, object]) -> str:
        """Render `key` (or its own templates) in this language; an unknown id reads as itself."""
        if key == "lines":
            items = params.get("items", ())
            if not isinstance(items, tuple):
                return ""
            if self._as_written():
                return "\n".join(items)  # each Text's own value is this very rendering
            return "\n".join(self.say(i) for i in items)
        template = self._template(key, own, params)
        values = {name: self._value(v) for name, v in params.items()}
        try:
            return template.format_map(values)
        except (KeyError, IndexError, ValueError, TypeError):
            return template  # a configured text with a bad placeholder still says something

    def _template(self, key: str, own: Mapping[str, str], params: Mapping[str, object]) -> str:
        if own:
            return own.get(self.language) or own.get(DEFAULT_LANGUAGE) or next(iter(own.values()))
        entry = CATALOGUE[self.language].get(key, EN.get(key, key))
        if isinstance(entry, str):
            return entry
        count = params.get(entry.count)
        n = count if isinstance(count, int | float) else 2
        one = n in (0, 1) if self.language == "fr" else n == 1
        return entry.one if one else entry.other

    def _as_written(self) -> bool:
        """True when this speech is a Text's own value (English, the host's zone)."""
        return self.language == "en" and self.zone is host_zone()

    def _value(self, value: object) -> object:
        if isinstance(value, Text):
            if self._as_written():
                return str.__str__(value)  # its value is this very rendering: no second pass
            return self.say(value)
        if isinstance(value, Moment):
            return self.hour(value.at)
        return value

    def say(self, text: str) -> str:
        """Render a Text in this language; a plain string (device text, a name) as it is."""
        if isinstance(text, Text):
            return self.render(text.key, text.own, text.params)
        return text

    def who(self, name: str) -> str:
        """Return who acted as people read it: the anonymous visitor in this language."""
        return self.t("who.anonymous") if name == ANONYMOUS else name

    def state(self, name: str) -> str:
        """Return a state's name as badges show it."""
        return self.t(f"state.{name}")

    def clock(self, ts: float | None) -> str:
        """Return an epoch time as day, month, time and zone: `02/12 02:47 CET`."""
        if ts is None or ts <= 0:
            return "-"
        return datetime.fromtimestamp(ts, self.zone).strftime("%d/%m %H:%M %Z")

    def hour(self, ts: float) -> str:
        """Return an epoch time as hours, minutes and zone: `02:47 CET`."""
        return datetime.fromtimestamp(ts, self.zone).strftime("%H:%M %Z")

    def duration(self, seconds: float | None) -> str:
        """Return a duration as '3d 4h', '2h 05m', '7m 12s' or '40s' (in French: 3 j 4 h...)."""
        if seconds is None:
            return "-"
        s = max(0, int(seconds))
        d, s = divmod(s, 86400)
        h, s = divmod(s, 3600)
        m, s = divmod(s, 60)
        if d:
            return self.t("d.days", d=d, h=h)
        if h:
            return self.t("d.hours", h=h, m=m)
        if m:
            return self.t("d.minutes", m=m, s=s)
        return self.t("d.seconds", s=s)


_LANGUAGE_RANGE = re.compile(
    r"^\s*([A-Za-z]{1,8})(?:-[A-Za-z0-9]{1,8})*\s*(?:;\s*q\s*=\s*([\d.]+))?"
)


_SUPPORTED: dict[str, Language] = {lang: lang for lang in LANGUAGES}


def negotiate(accept_language: str | None, default: Language) -> Language:
    """Return the supported language the browser prefers (RFC 9110 q-values), else default."""
    best: tuple[float, Language] | None = None
    for i, part in enumerate((accept_language or "")[:1000].split(",")[:32]):
        match = _LANGUAGE_RANGE.match(part)
        if match is None:
            continue
        try:
            q = float(match.group(2)) if match.group(2) else 1.0
        except ValueError:
            continue
        lang = _SUPPORTED.get(match.group(1).lower())
        q -= i * 1e-6  # equal weights: the first named wins
        if q > 0 and lang is not None and (best is None or q > best[0]):
            best = (q, lang)
    return best[1] if best is not None else default


def placeholders(template: str) -> set[str]:
    """Return the names a template's `{placeholders}` use (for the catalogue's own test)."""
    return {m.group(1) for m in re.finditer(r"\{(\w+)[^{}]*\}", template)}


def check_template(template: str, **sample: object) -> str:
    """Render a configured template with sample values; ValueError naming what is wrong."""
    try:
        return template.format_map(sample)
    except KeyError as exc:
        allowed = ", ".join(sorted(sample))
        raise ValueError(f"unknown placeholder {{{exc.args[0]}}} (known: {allowed})") from exc
    except (IndexError, ValueError, TypeError) as exc:
        raise ValueError(f"bad placeholder in {template!r}: {exc}") from exc
