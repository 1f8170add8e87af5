# ruff: noqa: E501  (the templates read best one a line)
"""Builds the labelled prompt set of the gateway's complexity router:
``src/conveyor/gateway/data/complexity_prompts.jsonl`` (deterministic: the same script
gives the same file).

    .venv/bin/python scripts/gateway_complexity_data.py
    .venv/bin/python scripts/gateway_complexity_fit.py      # then fit the classifier

Each record: ``text`` (one user prompt), ``label`` (``simple``: a cheap, fast model
answers it as well as a large one; ``complex``: it needs reasoning, code, mathematics,
several parts or a long analysis), ``family`` (the kind of prompt: the templates it was
made from) and ``split`` (``train`` or ``held_out``). Held-out is chosen by family, never
by record: no held-out prompt is a variation of a template fitted on. The labels are the
templates' (written here, by the same hands as the features): a measure of how well the
features separate these kinds of prompt, not of real traffic.

Simple families include decoys for the features (a shell command asked about, a sum, a
long paragraph to summarize in one line, "write" and "step" used innocently); complex
ones include short prompts ("Prove that there are infinitely many primes.").
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src/conveyor/gateway/data/complexity_prompts.jsonl"
PER_FAMILY = 25

#: Families held out of the fit (about a third of each label's).
HELD_OUT = {
    "simple": {"unit_conversion", "command_lookup", "one_line_summary", "recommendation"},
    "complex": {"proof", "system_design", "multi_part", "fermi_estimate"},
}

# ----------------------------------------------------------------------------- slots
COUNTRIES = ["France", "Kenya", "Japan", "Peru", "Norway", "Egypt", "Canada", "Vietnam", "Portugal", "Poland", "Chile", "Ireland", "Ghana", "Austria", "Nepal"]  # fmt: skip
BOOKS = ["Pride and Prejudice", "One Hundred Years of Solitude", "Things Fall Apart", "The Trial", "Moby-Dick", "Beloved", "The Little Prince", "Dune", "Middlemarch", "Don Quixote"]  # fmt: skip
WORDS = ["ephemeral", "ubiquitous", "serendipity", "laconic", "pragmatic", "quixotic", "mellifluous", "obfuscate", "candid", "resilient", "gregarious", "meticulous"]  # fmt: skip
PHRASES = ["good morning", "thank you very much", "where is the train station", "I am hungry", "see you tomorrow", "how much does it cost", "happy birthday", "the weather is nice"]  # fmt: skip
LANGS = ["Spanish", "German", "Italian", "Japanese", "Swahili", "Portuguese", "Dutch", "Korean"]
ANIMALS = ["octopus", "otter", "hummingbird", "axolotl", "elephant", "penguin", "honeybee", "chameleon", "wombat", "orca"]  # fmt: skip
TOPICS = ["the French Revolution", "photosynthesis", "black holes", "inflation", "the immune system", "plate tectonics", "the Silk Road", "renewable energy", "the printing press", "antibiotic resistance", "urbanization", "the Cold War"]  # fmt: skip
UNITS = [("inches", "foot"), ("ounces", "pound"), ("centimetres", "metre"), ("minutes", "day"), ("millilitres", "litre"), ("feet", "mile"), ("grams", "kilogram"), ("seconds", "hour")]  # fmt: skip
COMMANDS = ["ls", "grep", "chmod", "git status", "pwd", "cat", "tar", "curl", "ssh", "top", "df -h", "mkdir -p"]  # fmt: skip
PETS = ["puppy", "kitten", "goldfish", "parrot", "hamster", "tortoise", "rabbit"]
THINGS = ["the telephone", "the light bulb", "the bicycle", "penicillin", "the World Wide Web", "the printing press", "the steam engine", "the transistor"]  # fmt: skip
PEOPLE = ["Marie Curie", "Nelson Mandela", "Ada Lovelace", "Frida Kahlo", "Alan Turing", "Wangari Maathai", "Leonardo da Vinci", "Rosalind Franklin"]  # fmt: skip
SENTENCES = ["Send me the report now.", "You forgot to call me back.", "I need this fixed today.", "Your answer was wrong.", "Move the meeting to Friday.", "Stop sending me these emails."]  # fmt: skip
TYPOS = ["I recieved you're mesage yesterday.", "Their going too the libary.", "The wether was definately nice.", "We should of left earlier, its late.", "Untill tommorow, then."]  # fmt: skip
CITIES = ["Lisbon", "Nairobi", "Osaka", "Lima", "Oslo", "Cairo", "Toronto", "Hanoi", "Krakow", "Austin"]  # fmt: skip
FOODS = ["pancakes", "a lentil soup", "guacamole", "fried rice", "a tomato salad", "banana bread", "hummus", "an omelette"]  # fmt: skip
PROG_LANGS = ["Python", "JavaScript", "Go", "Rust", "Java", "TypeScript", "C++", "Kotlin"]
TASKS = [
    "merges overlapping intervals in a list of (start, end) pairs",
    "finds the longest palindromic substring of a string",
    "parses a CSV file with quoted fields and returns a list of dictionaries",
    "implements an LRU cache with O(1) get and put",
    "detects a cycle in a directed graph given as an adjacency list",
    "computes the edit distance between two strings",
    "rate-limits calls with a token bucket that is safe across threads",
    "validates a Sudoku board and reports every rule it breaks",
    "returns the k most frequent words of a text, ties broken alphabetically",
    "serializes a binary tree to a string and back",
    "schedules tasks with dependencies in topological order",
    "retries an HTTP request with exponential backoff and jitter",
]  # fmt: skip
SYSTEMS = ["a URL shortener", "a chat service for 10 million users", "a ride-sharing dispatch service", "a distributed job scheduler", "a news feed with ranking", "a payment ledger", "a collaborative document editor", "a video upload and transcoding pipeline", "a metrics and alerting system", "an online bookstore's search"]  # fmt: skip
PAIRS = [("PostgreSQL", "MongoDB"), ("Kafka", "RabbitMQ"), ("React", "Vue"), ("REST", "gRPC"), ("microservices", "a monolith"), ("Kubernetes", "plain virtual machines"), ("renting", "buying a home"), ("index funds", "picking individual stocks"), ("solar panels", "a heat pump"), ("Rust", "Go")]  # fmt: skip
ASPECTS = ["performance", "cost", "reliability", "developer experience", "scalability", "operational complexity", "long-term risk", "security"]  # fmt: skip
GOALS = ["learn conversational Spanish", "run a half marathon", "migrate a monolith to services", "launch a small online shop", "prepare for a machine learning interview", "reduce a team's cloud bill by 30%", "write a first novel", "move a data warehouse to the cloud"]  # fmt: skip
EVENTS = ["the 2008 financial crisis", "the fall of the Roman Empire", "the collapse of the Soviet Union", "the dot-com bubble", "the Industrial Revolution in Britain", "the decline of Detroit's car industry", "the Arab Spring", "the rise of streaming music"]  # fmt: skip


def _pick(rng: random.Random, items: list[str]) -> str:
    return rng.choice(items)


# ------------------------------------------------------------------------- simple
def capital_fact(rng: random.Random) -> str:
    c = _pick(rng, COUNTRIES)
    return rng.choice(
        [
            f"What is the capital of {c}?",
            f"capital of {c}?",
            f"Which currency does {c} use?",
            f"What language do people speak in {c}?",
            f"How many people live in {c}, roughly?",
        ]
    )


def author_fact(rng: random.Random) -> str:
    b, p, t = _pick(rng, BOOKS), _pick(rng, PEOPLE), _pick(rng, THINGS)
    return rng.choice(
        [
            f"Who wrote {b}?",
            f"When was {t} invented?",
            f"What is {p} famous for?",
            f"In what year was {b} published?",
            f"Where was {p} born?",
        ]
    )


def definition(rng: random.Random) -> str:
    w = _pick(rng, WORDS)
    return rng.choice(
        [
            f"Define {w}.",
            f"What does '{w}' mean?",
            f"Give me a synonym for {w}.",
            f"Use the word {w} in a sentence.",
            f"Is '{w}' a noun or an adjective?",
        ]
    )


def translation(rng: random.Random) -> str:
    p, lang = _pick(rng, PHRASES), _pick(rng, LANGS)
    return rng.choice(
        [
            f"Translate '{p}' into {lang}.",
            f"How do you say '{p}' in {lang}?",
            f"Write '{p}' in {lang}, please.",
            f"What's the {lang} for '{p}'?",
        ]
    )


def greeting(rng: random.Random) -> str:
    name = _pick(rng, ["", " Sam", " friend", " there"])
    return rng.choice(
        [
            f"Hi{name}!",
            f"Hello{name}, how are you today?",
            "Thanks, that helped a lot.",
            "Good morning! Ready to chat?",
            "ok cool, thank you",
            "Can you say that again more briefly?",
            "Great, bye for now.",
            f"Hey{name}, what's up?",
        ]
    )


def fun_fact(rng: random.Random) -> str:
    a = _pick(rng, ANIMALS)
    return rng.choice(
        [
            f"Tell me a fun fact about the {a}.",
            f"What does a {a} eat?",
            f"How long does a {a} live?",
            f"Is the {a} a mammal?",
            f"Where do {a}s live?",
        ]
    )


def spelling(rng: random.Random) -> str:
    s = _pick(rng, TYPOS)
    return rng.choice(
        [
            f"Fix the spelling: {s}",
            f'Correct the grammar in this sentence: "{s}"',
            f"Proofread: {s}",
            f"Any typos here? {s}",
        ]
    )


def polite_rewrite(rng: random.Random) -> str:
    s = _pick(rng, SENTENCES)
    return rng.choice(
        [
            f'Make this more polite: "{s}"',
            f"Rewrite in a friendlier tone: {s}",
            f"Write this more formally: {s}",
            f"Shorten this sentence: {s}",
        ]
    )


def small_sum(rng: random.Random) -> str:
    a, b = rng.randint(2, 999), rng.randint(2, 999)
    return rng.choice(
        [
            f"What is {a} plus {b}?",
            f"{a} + {b} = ?",
            f"What's {a} times 2?",
            f"Is {a} an even number?",
            f"Round {a}.{b} to the nearest whole number.",
        ]
    )


def unit_conversion(rng: random.Random) -> str:
    small, big = rng.choice(UNITS)
    n = rng.randint(2, 500)
    return rng.choice(
        [
            f"How many {small} are in a {big}?",
            f"Convert {n} {small} to {big}s.",
            f"{n} {small} in {big}s?",
            f"What is one {big} in {small}?",
        ]
    )


def command_lookup(rng: random.Random) -> str:
    c = _pick(rng, COMMANDS)
    return rng.choice(
        [
            f"What does the `{c}` command do?",
            f"What is `{c}` short for?",
            f"Which package provides the {c} command on Ubuntu?",
            f"Is `{c}` available on macOS?",
        ]
    )


def one_line_summary(rng: random.Random) -> str:
    t = _pick(rng, TOPICS)
    paragraph = (
        f"{t[0].upper() + t[1:]} has been studied for a long time. Many books describe it, "
        f"and teachers often use it as an example in class. People who hear about {t} for "
        "the first time usually find it interesting, and there are plenty of documentaries "
        "and articles about it online for anyone who wants to know more."
    )
    return rng.choice(
        [
            f"Summarize in one sentence: {paragraph}",
            f"Give this paragraph a title: {paragraph}",
            f"What is this text about, in three words? {paragraph}",
        ]
    )


def long_lookup(rng: random.Random) -> str:
    name, city, food = _pick(rng, PEOPLE), _pick(rng, CITIES), _pick(rng, FOODS)
    day = rng.choice(["Monday", "Tuesday", "Thursday", "Friday"])
    email = (
        f"Hello team, I hope you are all well. As discussed last week, {name} will visit our "
        f"office in {city} on {day}. We will meet in the main room at ten, then have lunch "
        f"together; the canteen will serve {food}. Please let me know if you cannot come, "
        "and remember to bring your badge. Best regards, the office manager."
    )
    return rng.choice(
        [
            f"Which day is the visit? {email}",
            f"Who is visiting, according to this email? {email}",
            f"Translate this email into French: {email}",
            f"What will be served for lunch? {email}",
            f"Fix any typos in this message: {email}",
        ]
    )


def recommendation(rng: random.Random) -> str:
    pet, food, city = _pick(rng, PETS), _pick(rng, FOODS), _pick(rng, CITIES)
    return rng.choice(
        [
            f"Suggest a name for my new {pet}.",
            f"What should I drink with {food}?",
            f"Recommend a museum in {city}.",
            f"What is a good first step to make {food}?",
            f"Write a one-line birthday wish for my {pet}.",
        ]
    )


# ------------------------------------------------------------------------ complex
def proof(rng: random.Random) -> str:
    n = rng.choice(["n", "k", "m"])
    return rng.choice(
        [
            "Prove that there are infinitely many primes.",
            "Prove that the square root of 2 is irrational.",
            f"Show that the sum of the first {n} odd numbers is {n}^2, by induction.",
            f"Prove that {n}^3 - {n} is divisible by 6 for every integer {n}.",
            "Prove that every tree with n vertices has exactly n - 1 edges.",
            "Show that a graph is bipartite if and only if it has no odd cycle.",
            f"Prove by contradiction that there is no largest even number, then generalize the argument to multiples of {rng.randint(3, 9)}.",
            "Demonstrate rigorously that the harmonic series diverges.",
        ]
    )


def word_problem(rng: random.Random) -> str:
    a, b = _pick(rng, CITIES), _pick(rng, CITIES)
    v1, v2, d = rng.randint(40, 120), rng.randint(40, 120), rng.randint(100, 900)
    p, r, y = rng.randint(1, 9) * 1000, rng.randint(2, 9), rng.randint(2, 30)
    return rng.choice(
        [
            f"A train leaves {a} at {v1} km/h and another leaves {b}, {d} km away, at {v2} km/h towards it. When and where do they meet? Show your work.",
            f"If I invest ${p} at {r}% interest compounded monthly, how much will I have after {y} years, and how long until it doubles? Explain each step.",
            f"A tank fills in {rng.randint(2, 9)} hours with pipe A and {rng.randint(3, 12)} hours with pipe B, while a drain empties it in {rng.randint(5, 20)} hours. How long does it take to fill with all three open? Solve it step by step.",
            f"Three friends share a bill of ${d}. The first pays twice what the second pays, and the third pays ${v1} less than the first. How much does each pay? Set up the equations and solve them.",
            f"Solve for x and y: {rng.randint(2, 9)}x + {rng.randint(2, 9)}y = {d}, x - y = {rng.randint(1, 30)}. Then check your solution.",
        ]
    )


def code_writing(rng: random.Random) -> str:
    lang, task = _pick(rng, PROG_LANGS), _pick(rng, TASKS)
    return rng.choice(
        [
            f"Write a {lang} function that {task}. Include unit tests and explain its time complexity.",
            f"Implement, in {lang}, a function that {task}; handle the edge cases and document them.",
            f"I need {lang} code that {task}. Make it efficient and explain the algorithm you chose.",
            f"Write {lang} that {task}, then refactor it for readability and compare both versions.",
            f"Two things: 1) write {lang} code that {task}; 2) tell me how you would test it.",
        ]
    )


def code_debugging(rng: random.Random) -> str:
    var = rng.choice(["items", "rows", "values", "users"])
    snippets = [
        f"def total({var}):\n    s = 0\n    for i in range(len({var}) + 1):\n        s += {var}[i]\n    return s",
        f"async function load({var}) {{\n  {var}.forEach(async (x) => {{ await save(x); }});\n  console.log('done');\n}}",
        f"for (int i = 0; i <= {var}.size(); i++) {{\n    sum += {var}.get(i);\n}}",
        f"cache = {{}}\ndef get(key, {var}=[]):\n    {var}.append(key)\n    return cache.setdefault(key, len({var}))",
        f"SELECT name, COUNT(*) FROM {var} JOIN orders ON {var}.id = orders.user_id WHERE orders.total > 100;",
    ]
    code = rng.choice(snippets)
    ask = rng.choice(
        [
            "Why does this fail, and how do I fix it?",
            "This gives the wrong result on some inputs. Find the bug and explain it.",
            "Review this code: what is wrong with it, and what would you change?",
            "It crashes in production. Explain the cause and write a corrected version.",
        ]
    )
    return f"{ask}\n\n```\n{code}\n```"


def system_design(rng: random.Random) -> str:
    s, (x, y) = _pick(rng, SYSTEMS), rng.choice(PAIRS)
    n = rng.choice(["1,000", "50,000", "200,000", "1 million"])
    return rng.choice(
        [
            f"Design {s} that handles {n} requests per second. Describe the components, the data model, how it scales and how it fails.",
            f"How would you architect {s}? Discuss the trade-offs of using {x} versus {y} for its storage.",
            f"Sketch the architecture of {s}, estimate its capacity needs, and explain where the bottlenecks will be.",
        ]
    )


def comparison(rng: random.Random) -> str:
    (x, y), a1, a2 = rng.choice(PAIRS), _pick(rng, ASPECTS), _pick(rng, ASPECTS)
    return rng.choice(
        [
            f"Compare {x} and {y} in terms of {a1} and {a2}, and recommend one for a small startup. Justify your choice.",
            f"What are the pros and cons of {x} versus {y}? Weigh them for a team of five and conclude.",
            f"Evaluate {x} against {y} for {a1}, {a2} and maintenance over five years; which would you pick and why?",
            f"{x} or {y}? Which is better for {a1}? Which for {a2}? Where does each break down?",
        ]
    )


def multi_part(rng: random.Random) -> str:
    t, e = _pick(rng, TOPICS), _pick(rng, EVENTS)
    return rng.choice(
        [
            f"1. Explain {t}. 2. Give two examples. 3. Describe a common misconception about it and why it is wrong.",
            f"First, summarize the causes of {e}. Second, explain its consequences. Finally, say what could have prevented it.",
            f"Answer each part: (a) what is {t}? (b) how is it measured? (c) how has our understanding of it changed since 1950?",
            f"What caused {e}? Who was affected most? And what lessons do economists draw from it today?",
        ]
    )


def step_by_step(rng: random.Random) -> str:
    n = rng.randint(3, 9)
    return rng.choice(
        [
            f"Think step by step: a bat and a ball cost ${n}.10 in total, and the bat costs ${n} more than the ball. How much does the ball cost?",
            f"Let's reason step by step. There are {n} boxes; each holds twice as many marbles as the one before, and the first holds 3. How many marbles in all?",
            "Work through this carefully: if all bloops are razzies and all razzies are lazzies, are all bloops definitely lazzies? Explain your reasoning.",
            f"Reason it out: {n} people each shake hands with every other person once. How many handshakes, and why?",
            "Walk me through your reasoning: which is larger, 2^100 or 10^30?",
        ]
    )


def causal_analysis(rng: random.Random) -> str:
    e = _pick(rng, EVENTS)
    return rng.choice(
        [
            f"Analyze the main causes of {e} and evaluate their relative importance.",
            f"Critically assess the claim that {e} was inevitable. Consider economic, political and social factors.",
            f"Why did {e} happen when it did, and not a decade earlier? Argue your position with evidence.",
        ]
    )


def planning(rng: random.Random) -> str:
    g, w = _pick(rng, GOALS), rng.randint(4, 16)
    return rng.choice(
        [
            f"Create a {w}-week plan to {g}, with milestones, risks, and how to measure progress.",
            f"I want to {g} in {w} weeks. Break it into phases, estimate the effort of each, and tell me what could go wrong.",
            f"Draft a detailed roadmap to {g}: priorities, dependencies between steps, and a fallback if I fall behind.",
            f"How should I {g}? What should I do first? What can I skip? How will I know it worked?",
        ]
    )


def derivation(rng: random.Random) -> str:
    loss = rng.choice(["the cross-entropy loss of a softmax classifier", "the mean squared error of a linear model", "the log-likelihood of a logistic regression", "the hinge loss of a linear SVM"])  # fmt: skip
    return rng.choice(
        [
            f"Derive the gradient of {loss} with respect to its weights.",
            f"Derive {loss} from first principles and explain each assumption.",
            f"Compute the Hessian of {loss} and show whether the problem is convex.",
            "Derive the closed-form solution of ridge regression and explain how the penalty changes it.",
        ]
    )


def fermi_estimate(rng: random.Random) -> str:
    c = _pick(rng, CITIES)
    return rng.choice(
        [
            f"Estimate how many piano tuners work in {c}. Explain your assumptions and the order of magnitude of the error.",
            f"Roughly how much electricity do all the traffic lights in {c} use per year? Reason through it.",
            f"How many litres of coffee are drunk in {c} every day? Build the estimate from population figures.",
        ]
    )


FAMILIES: dict[str, dict[str, Callable[[random.Random], str]]] = {
    "simple": {
        f.__name__: f
        for f in (
            capital_fact,
            author_fact,
            definition,
            translation,
            greeting,
            fun_fact,
            spelling,
            polite_rewrite,
            small_sum,
            unit_conversion,
            command_lookup,
            one_line_summary,
            long_lookup,
            recommendation,
        )
    },
    "complex": {
        f.__name__: f
        for f in (
            proof,
            word_problem,
            code_writing,
            code_debugging,
            system_design,
            comparison,
            multi_part,
            step_by_step,
            causal_analysis,
            planning,
            derivation,
            fermi_estimate,
        )
    },
}


def build() -> list[dict[str, str]]:
    records = []
    for label, families in FAMILIES.items():
        for family, make in families.items():
            rng = random.Random(f"{label}/{family}")
            seen: set[str] = set()
            tries = 0
            while len(seen) < PER_FAMILY and tries < PER_FAMILY * 20:
                tries += 1
                text = make(rng)
                if text in seen:
                    continue
                seen.add(text)
                split = "held_out" if family in HELD_OUT[label] else "train"
                records.append({"text": text, "label": label, "family": family, "split": split})
    return records


def main() -> None:
    records = build()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    counts: dict[tuple[str, str], int] = {}
    for r in records:
        counts[r["label"], r["split"]] = counts.get((r["label"], r["split"]), 0) + 1
    print(f"wrote {len(records)} prompts to {OUT}: {counts}")


if __name__ == "__main__":
    main()
