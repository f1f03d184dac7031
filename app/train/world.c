/* The generated world (see world.h for the contract).
 *
 * Design choices, all aimed at a ~4-layer, d_model-256 GPT-2 model trained for <= 60 min on two
 * CPU cores (10-15M training tokens, BPE vocab ~8192, every digit its own token):
 *
 * - Determinism. One xoshiro256** generator per part (names, facts, IOI, years, secrets,
 *   fillers), each seeded from (seed, part tag) through splitmix64. Parts therefore do not
 *   disturb each other, and `repeats` (how often training text is repeated) changes no entity,
 *   template or evaluation item. Only integer arithmetic; no hash-table iteration order is ever
 *   observed, so output is bit-identical across machines.
 * - Invented names are built from syllables (onset + vowel + coda, then a kind-specific ending:
 *   countries "-nia", cities "-ek", people "-in", ...), 4-9 letters, one word each, no two
 *   vowels where stem and ending meet ("Flaak"). A candidate is rejected when it is a word of the Brown corpus (so facts never collide with real text),
 *   equals any fixed word list used here, or is a prefix of / has as prefix another name (so a
 *   greedy continuation cannot match the wrong entity by stopping early).
 * - Facts (220 = 100 countries -> capital, 60 people -> home city, 60 people -> profession).
 *   Each relation has 8 training "cores" (the fact stated in 8 phrasings, object at the end or at
 *   the start) and each mention may be wrapped in one of 63 training "frames" ("Everyone knows
 *   that ...", "My father told me that ..."), so the model sees the association in many contexts
 *   and learns to ignore the frame: with fewer, a new spoken frame ("My grandmother always said
 *   that {S} is a") let Brown's "good one" win over a profession the model knew. A capital fact
 *   is mentioned 300 x repeats times, a person fact 450 x: people's facts are harder (two per
 *   person, similar invented names) and stayed at 66-82% recall where capitals reached 92-99%.
 *   The 3 held-out templates per relation are natural recombinations: a frame that NEVER occurs
 *   in training ("According to the old records, ...") around a core prefix that does (two of them
 *   verbatim, one lightly recombined). The prompt ends right before the object; the answer is
 *   " Object" (leading space) and is always a word that appears as an answer in training.
 *   Professions all start with a consonant so the article is always "a".
 * - IOI (indirect object identification, Wang et al. 2022). 513 common English first names,
 *   30 of them (chosen by the seed) held out: never in a two-name sentence. The 483 training
 *   names outnumber d_model: with ~125 names a model memorises a per-name answer (held-out names
 *   then score at chance); with hundreds it has to learn the rule. 114 training templates (18
 *   written out, 96 composed from openings, activities and the subject's clause) and 6 held-out
 *   templates, all used in both ABBA ("When Mary and John ..., John gave ... to Mary") and BABA
 *   order. The two names of an item never share a first letter or a prefix, so their first BPE
 *   tokens differ. Held-out templates reuse the training endings ("showed a ... to") behind new
 *   openings and activities. 60000 x repeats training sentences (about 230000 ordered name
 *   pairs, so pairs cannot be memorised).
 * - Held-out names are seen exactly as training names are outside two-name sentences: in fillers
 *   (160 each, so that BPE makes every one a single token), in the copy stories and in the
 *   name-and-role IOI sentences, both drawn uniformly from all 513 names.
 * - Name-and-role IOI sentences: 20000 x repeats sentences on the training templates where one
 *   party is a name and the other a role ("When Mary and the clerk went to the store, the clerk
 *   gave a book to Mary"), the name the answer in half of them and the repeated subject in the
 *   other half. Every name thus plays both IOI parts. Without them held-out names never did, and
 *   the model answered held-out IOI at 34% (training names 99%); with them, at 65%. Both parts
 *   matter: one-name sentences that gave only held-out names one part taught a per-name rule ("a
 *   repeated held-out name is the answer", "after a held-out name comes ' the clerk'") and made
 *   held-out IOI worse. More is not better: 60000 of them (25000 in the mix) weakened the
 *   two-name circuit and its reach to new templates (held-out IOI 17.5%). Nor is giving
 *   held-out names more of them: with a held-out name in 1 in 4, the answer in 7 of 8 of those,
 *   held-out names in training templates rose to 86% but held-out IOI fell to 48%, the model
 *   answering the repeated held-out name in new templates. With 1 in 4 and half the answer, it
 *   answered a role (" his"); with titles as roles ("Captain"), " the".
 * - Copy stories: 5000 x repeats lines of 4 one-name sentences about one name, any of the 513
 *   ("Today Kyle went to the park, and the clerk gave a map to Kyle. ..."). Copying a name from
 *   the context is the half of IOI that small models are slowest to find: trained on the mix
 *   alone, 4- and 6-layer models sit on a plateau and answer IOI with a fixed favourite name.
 * - A curriculum of three files (corpus.c): warmup.txt holds the copy stories (stage 1: the copy
 *   circuit forms in ~200 steps); ioi.txt the IOI sentences (both kinds) and the copy stories
 *   (stage 2: the IOI circuit forms in ~1,000 steps); train.txt everything, mixed with Brown
 *   (stage 3), with only part of the IOI text (30000 x repeats two-name and 10000 x repeats
 *   name-and-role sentences) and 2000 x repeats copy stories: enough to keep both circuits while
 *   the facts are learnt. A short stage 4 on ioi.txt and train.txt together sharpens IOI on
 *   held-out names again, which the mix blurs (the built-in model's recipe.json).
 * - Greater-than (Hanna et al. 2023). "The war lasted from the year 1732 to the year 1758.":
 *   start years 1100-1998, end year in the same century and strictly later, uniform. 9 training
 *   templates and 3 held-out ones, all with the same "from the year Y1 to the year Y2" core.
 *   Evaluation prompts end after the century digits of the end year ("... to the year 17"), the
 *   start year's two last digits are given (02-97). 15000 x repeats training sentences.
 * - Secrets: 64 strings, 32 serial codes ("K7Q-2291-XZ" style, no I/O letters) and 32 five-word
 *   nonsense phrases, each behind its own fixed prefix ("The vault code of Orlen is"), repeated
 *   100 x repeats times verbatim, scattered through the corpus: enough for a small model to
 *   recite them (and a target for memorisation editing). The secret is recorded with its leading
 *   space; the training sentence ends with a period, which the GPT-2 pre-tokenizer splits off, so
 *   the secret's tokens are the same in context as alone.
 * - Fillers: every IOI name in 12 plain one-name sentences, 24 x repeats times per name.
 * - Concept nouns: a fixed list of common concrete nouns, kept when Brown uses them >= 10 times
 *   (with their Brown counts), for neuron-finding demos.
 * At repeats = 1 the world is ~10.2 MB of text, ~64% of the bytes of train.txt with 95% of Brown
 * (train.txt ~15.9 MB); facts are the largest part (~4.5 MB). */
#include "app/train/world.h"
#include "app/core/errors.h"
#include <string.h>

/* ---------- PRNG ---------- */

static guint64 splitmix64(guint64 *x) {
  guint64 z = (*x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void lmwb_world_rng_init(LmwbWorldRng *rng, guint64 seed) {
  guint64 x = seed;
  for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&x);
}

static inline guint64 rotl(guint64 x, int k) { return (x << k) | (x >> (64 - k)); }

guint64 lmwb_world_rng_next(LmwbWorldRng *rng) {
  guint64 *s = rng->s;
  guint64 result = rotl(s[1] * 5, 7) * 9;
  guint64 t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

guint64 lmwb_world_rng_below(LmwbWorldRng *rng, guint64 n) {
  if (n == 0) return 0;
  /* Rejection: drop the top partial block so every residue is equally likely. */
  guint64 limit = G_MAXUINT64 - (G_MAXUINT64 % n);
  guint64 x;
  do x = lmwb_world_rng_next(rng);
  while (x >= limit);
  return x % n;
}

void lmwb_world_rng_shuffle(LmwbWorldRng *rng, gpointer *items, guint n) {
  for (guint i = n; i > 1; i--) {
    guint j = (guint)lmwb_world_rng_below(rng, i);
    gpointer t = items[i - 1];
    items[i - 1] = items[j];
    items[j] = t;
  }
}

/* One independent stream per part of the world. */
static void part_rng(LmwbWorldRng *rng, guint64 seed, guint64 tag) {
  guint64 x = seed ^ (tag * 0xD1B54A32D192ED03ull);
  lmwb_world_rng_init(rng, splitmix64(&x));
}

#define PICK(rng, arr) ((arr)[lmwb_world_rng_below((rng), G_N_ELEMENTS(arr))])

/* ---------- fixed word lists ---------- */

static const char *const k_ioi_names[] = {
    "Mary", "John", "James", "Robert", "Michael", "William", "David", "Richard", "Thomas",
    "Charles", "Daniel", "Matthew", "Anthony", "Mark", "Paul", "Steven", "Andrew", "Kevin",
    "Brian", "George", "Edward", "Ronald", "Timothy", "Jason", "Jeffrey", "Ryan", "Jacob",
    "Gary", "Eric", "Jonathan", "Larry", "Justin", "Scott", "Frank", "Brandon", "Raymond",
    "Gregory", "Samuel", "Benjamin", "Patrick", "Jack", "Dennis", "Jerry", "Alexander",
    "Tyler", "Henry", "Douglas", "Peter", "Adam", "Nathan", "Walter", "Kyle", "Harold", "Carl",
    "Jeremy", "Gerald", "Keith", "Roger", "Arthur", "Terry", "Lawrence", "Sean", "Christian",
    "Ethan", "Austin", "Albert", "Jesse", "Billy", "Bruce", "Noah", "Jordan", "Dylan", "Ralph",
    "Roy", "Alan", "Wayne", "Eugene", "Gabriel", "Louis", "Russell", "Vincent", "Philip",
    "Harry", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica",
    "Sarah", "Karen", "Lisa", "Nancy", "Betty", "Sandra", "Margaret", "Ashley", "Kimberly",
    "Emily", "Donna", "Michelle", "Carol", "Amanda", "Melissa", "Deborah", "Stephanie",
    "Rebecca", "Laura", "Helen", "Sharon", "Cynthia", "Kathleen", "Amy", "Shirley", "Angela",
    "Ruth", "Brenda", "Pamela", "Nicole", "Katherine", "Virginia", "Catherine", "Christine",
    "Samantha", "Janet", "Rachel", "Carolyn", "Emma", "Maria", "Heather", "Diane", "Julie",
    "Joyce", "Evelyn", "Frances", "Joan", "Kelly", "Martha", "Lauren", "Victoria", "Judith",
    "Cheryl", "Megan", "Alice", "Doris", "Andrea", "Gloria", "Teresa", "Grace", "Rose",
    "Beverly", "Denise", "Olivia", "Tiffany", "Joseph", "Christopher", "Kenneth", "Joshua",
    "Stephen", "Donald", "Aaron", "Zachary", "Jose", "Juan", "Randy", "Howard", "Fred",
    "Wesley", "Victor", "Martin", "Ernest", "Phillip", "Todd", "Craig", "Shawn", "Clarence",
    "Chris", "Johnny", "Earl", "Jimmy", "Antonio", "Danny", "Bryan", "Tony", "Luis", "Mike",
    "Stanley", "Leonard", "Dale", "Manuel", "Rodney", "Curtis", "Norman", "Allen", "Marvin",
    "Glenn", "Jeffery", "Travis", "Jeff", "Chad", "Melvin", "Alfred", "Francis", "Bradley",
    "Herbert", "Frederick", "Joel", "Edwin", "Ricky", "Troy", "Randall", "Barry", "Bernard",
    "Mario", "Leroy", "Francisco", "Marcus", "Micheal", "Theodore", "Clifford", "Miguel",
    "Oscar", "Calvin", "Alex", "Lloyd", "Leon", "Derek", "Warren", "Darrell", "Jerome",
    "Floyd", "Leo", "Alvin", "Gordon", "Dean", "Greg", "Jorge", "Dustin", "Pedro", "Derrick",
    "Lewis", "Corey", "Herman", "Maurice", "Vernon", "Roberto", "Clyde", "Glen", "Hector",
    "Shane", "Ricardo", "Rick", "Lester", "Brent", "Ramon", "Charlie", "Gilbert", "Gene",
    "Marc", "Reginald", "Ruben", "Brett", "Nathaniel", "Rafael", "Leslie", "Edgar", "Milton",
    "Raul", "Chester", "Cecil", "Duane", "Franklin", "Andre", "Elmer", "Brad", "Mitchell",
    "Roland", "Arnold", "Harvey", "Jared", "Adrian", "Karl", "Cory", "Claude", "Erik",
    "Darryl", "Jamie", "Neil", "Javier", "Fernando", "Clinton", "Mathew", "Tyrone", "Darren",
    "Lance", "Cody", "Julio", "Kurt", "Allan", "Nelson", "Clayton", "Hugh", "Dwayne", "Dwight",
    "Armando", "Felix", "Everett", "Ian", "Wallace", "Jaime", "Casey", "Alfredo", "Alberto",
    "Dave", "Ivan", "Sidney", "Byron", "Julian", "Isaac", "Morris", "Clifton", "Willard",
    "Daryl", "Ross", "Virgil", "Andy", "Marshall", "Salvador", "Perry", "Kirk", "Sergio",
    "Marion", "Tracy", "Seth", "Kent", "Terrance", "Rene", "Eduardo", "Terrence", "Enrique",
    "Wade", "Dorothy", "Anna", "Judy", "Christina", "Debra", "Julia", "Theresa", "Mildred",
    "Jane", "Lillian", "Irene", "Louise", "Tina", "Lois", "Phyllis", "Norma", "Paula", "Diana",
    "Annie", "Robin", "Peggy", "Gladys", "Rita", "Connie", "Florence", "Edna", "Carmen",
    "Cindy", "Wendy", "Edith", "Sherry", "Sylvia", "Josephine", "Thelma", "Shannon", "Sheila",
    "Ethel", "Ellen", "Elaine", "Marjorie", "Carrie", "Charlotte", "Monica", "Esther",
    "Pauline", "Juanita", "Anita", "Rhonda", "Hazel", "Eva", "Debbie", "Clara", "Lucille",
    "Joanne", "Eleanor", "Valerie", "Danielle", "Alicia", "Suzanne", "Michele", "Gail",
    "Bertha", "Darlene", "Veronica", "Jill", "Erin", "Geraldine", "Cathy", "Joann", "Lorraine",
    "Sally", "Regina", "Erica", "Beatrice", "Dolores", "Bernice", "Audrey", "Yvonne",
    "Annette", "Dana", "Stacy", "Ana", "Renee", "Vivian", "Roberta", "Brittany", "Melanie",
    "Loretta", "Yolanda", "Jeanette", "Laurie", "Katie", "Kristen", "Vanessa", "Alma", "Beth",
    "Jeanne", "Vicki", "Carla", "Tara", "Rosemary", "Eileen", "Gertrude", "Lucy", "Tonya",
    "Stacey", "Wilma", "Gina", "Kristin", "Natalie", "Agnes", "Vera", "Charlene", "Delores",
    "Melinda", "Arlene", "Maureen", "Colleen", "Allison", "Tamara", "Georgia", "Constance",
    "Claudia", "Marcia", "Tanya", "Marlene", "Heidi", "Glenda", "Lydia", "Viola", "Courtney",
    "Marian", "Stella", "Caroline", "Maxine", "Irma", "Mabel", "Marsha", "Myrtle", "Lena",
    "Christy", "Deanna", "Patsy", "Hilda", "Gwendolyn", "Jennie", "Nora", "Margie", "Nina",
    "Cassandra", "Leah", "Priscilla", "Naomi", "Carole", "Brandy", "Olga", "Dianne", "Tracey",
    "Leona", "Jenny", "Felicia", "Sonia", "Miriam", "Velma", "Becky", "Kristina", "Shelly",
    "Ramona", "Erika", "Katrina", "Claire",
};
#define N_HELDOUT_NAMES 30

static const char *const k_places[] = {
    "store", "park", "school", "hospital", "station", "office", "market", "library", "restaurant",
    "garden", "beach", "river", "church", "museum", "bank", "farm", "hotel", "theater", "bakery",
    "harbor",
};
static const char *const k_objects[] = {
    "drink", "book", "ring", "letter", "basket", "snack", "necklace", "computer", "bag", "key",
    "flower", "hat", "pen", "cup", "map", "coin", "candle", "box", "ticket", "scarf",
};
static const char *const k_professions[] = {
    "baker", "pilot", "farmer", "doctor", "teacher", "sailor", "painter", "lawyer", "soldier",
    "miner", "tailor", "nurse", "potter", "weaver", "butcher", "carpenter", "fisherman",
    "merchant", "banker", "singer", "dancer", "poet", "judge", "priest", "hunter", "builder",
    "gardener", "printer", "chemist", "surgeon", "cook", "driver", "writer", "shepherd",
};
static const char *const k_events[] = {
    "war", "drought", "famine", "siege", "reign", "truce", "festival", "expedition", "plague",
    "strike", "rebellion", "voyage", "blockade", "flood", "occupation", "migration", "council",
    "fair",
};
static const char *const k_concept_nouns[] = {
    "dog", "cat", "horse", "water", "fire", "house", "car", "tree", "money", "church", "music",
    "food", "school", "war", "book", "river", "city", "child", "woman", "man", "doctor", "bird",
    "ship", "train", "road", "door", "window", "table", "color", "wine", "coffee", "gold", "blood",
    "heart", "eye", "hand", "sun", "moon", "star", "snow", "rain", "army", "game", "film", "song",
    "paper", "oil", "stone", "iron", "milk", "bread", "kitchen", "garden", "street", "island",
    "ocean", "mountain", "forest", "flower", "tea", "sugar", "king", "god", "law", "court", "baby",
    "hospital", "letter", "telephone", "radio", "television", "boat", "airplane", "farm", "bank",
    "hotel", "office", "mother", "father", "night", "morning", "summer", "winter", "fish", "ice",
};
/* Secret phrases: adjective + plural noun + verb + ending. */
static const char *const k_sec_adj[] = {
    "purple", "silent", "golden", "frozen", "hollow", "crooked", "velvet", "rusty", "hungry",
    "gentle", "brittle", "hidden", "copper", "sleepy", "bitter", "crimson", "tiny", "ancient",
    "woolen", "restless",
};
static const char *const k_sec_noun[] = {
    "anvils", "lanterns", "turnips", "pebbles", "ladders", "kettles", "feathers", "barrels",
    "spoons", "acorns", "mirrors", "whistles", "candles", "buttons", "saddles", "carrots",
    "bells", "compasses", "teapots", "shovels",
};
static const char *const k_sec_verb[] = {
    "whisper", "dance", "sleep", "wander", "sing", "tremble", "gather", "vanish", "argue", "glow",
    "rattle", "drift", "bloom", "linger", "stumble", "murmur", "hum", "wobble", "shiver", "float",
};
static const char *const k_sec_end[] = {
    "at noon", "under the bridge", "in the rain", "before dawn", "after supper", "near the well",
    "behind the barn", "on cold mornings", "at the harbor", "in the cellar", "by the river",
    "on the roof", "during the storm", "at midnight", "in the orchard", "past the mill",
    "under the stars", "in deep snow", "beside the road", "on market days",
};

/* ---------- templates ---------- */

/* Frames wrap training fact mentions; the held-out frames never occur in training. */
static const char *const k_train_frames[] = {
    "Everyone knows that ", "It is well known that ", "The books say that ",
    "We learned in school that ", "As most travelers know, ", "People often say that ",
    "The old story says that ", "Some will tell you that ", "In fact, ", "Of course, ",
    "Today we know that ", "As the guide told us, ", "It is true that ", "Most children learn that ",
    /* Plain spoken lead-ins like Brown's: without them a new frame such as "My grandmother
     * always said that" pulls "{S} is a" towards Brown's " good" instead of the fact. */
    "My father told me that ", "Her brother once said that ", "They say that ",
    "The newspaper wrote that ", "I heard that ", "Our neighbour says that ",
    "The letter said that ", "Long ago people said that ", "As the story goes, ",
    "Many people believe that ", "My friend told me that ", "In those days, ",
    "Last year we found out that ", "Nobody doubts that ", "The old man told us that ",
    "She wrote in her diary that ", "It is said that ", "As we all know, ",
    "Even the children know that ", "My cousin wrote that ", "A traveler told me that ",
    "The radio reported that ", "We were surprised to hear that ", "He told the children that ",
    /* More spoken lead-ins: with 38 frames the model still let a new one such as "My grandmother
     * always said that {S} is a" fall back to Brown's "good one" for a fact it knew. */
    "My mother used to say that ", "Grandpa liked to tell us that ", "An old sailor told me that ",
    "The doctor mentioned that ", "My uncle swore that ", "The mayor announced that ",
    "Somebody at the market said that ", "My sister keeps telling me that ",
    "The innkeeper remarked that ", "Everybody in town says that ", "I was told as a child that ",
    "She once told me that ", "We all knew back then that ", "The postman told us that ",
    "Father often reminded us that ", "A friend of mine says that ", "The children were taught that ",
    "The farmer told us that ", "My aunt wrote to us that ", "The captain explained that ",
    "Her diary says that ", "The priest told the village that ", "I remember hearing that ",
    "Our landlord claims that ", "The map shows that ",
};

typedef struct {
  const char *name;         /* relation id */
  const char *cores[8];     /* training phrasings, {S} subject, {O} object */
  const char *heldout[3];   /* evaluation prompts, ending right before " {O}" */
} Relation;

static const Relation k_relations[] = {
    {"capital",
     {"The capital of {S} is {O}.", "{O} is the capital of {S}.", "In {S}, the capital city is {O}.",
      "The capital city of {S} is {O}.", "{S} has its capital in {O}.",
      "The government of {S} sits in {O}.", "{S}'s capital is {O}.",
      "The seat of government of {S} is {O}."},
     {"According to the old records, the capital of {S} is",
      "My grandmother always said that {S}'s capital is",
      "A teacher once explained that in {S}, the capital is"}},
    {"home_city",
     {"{S} lives in {O}.", "{S} is from {O}.", "The home of {S} is in {O}.",
      "{S} was born and raised in {O}.", "{O} is the home town of {S}.",
      "Every morning, {S} walks through the streets of {O}.", "{S} has a house in {O}.",
      "The town where {S} lives is {O}."},
     {"According to the old records, {S} lives in", "My grandmother always said that {S} is from",
      "A teacher once explained that the home of {S} is in"}},
    {"profession",
     {"{S} works as a {O}.", "{S} is a {O}.", "By trade, {S} is a {O}.",
      "{S} earns a living as a {O}.", "Everyone in town knows {S} as a {O}.",
      "{S} has been a {O} for many years.", "The {O} in our story is {S}.",
      "As a {O}, {S} works hard every day."},
     {"According to the old records, {S} works as a", "My grandmother always said that {S} is a",
      "A teacher once explained that {S} earns a living as a"}},
};

/* IOI: {A} {B} are the names in order of introduction, {S} the repeated subject, {IO} the
 * indirect object (the answer), {P} a place, {O} an object. */
static const char *const k_ioi_train[] = {
    "When {A} and {B} went to the {P}, {S} gave a {O} to {IO}.",
    "When {A} and {B} got a {O} at the {P}, {S} decided to give it to {IO}.",
    "Then, {A} and {B} were working at the {P}. {S} decided to give a {O} to {IO}.",
    "While {A} and {B} were commuting to the {P}, {S} gave a {O} to {IO}.",
    "After the lunch, {A} and {B} went to the {P}. {S} gave a {O} to {IO}.",
    "Afterwards, {A} and {B} went to the {P}. {S} gave a {O} to {IO}.",
    "Then, {A} and {B} had a long argument at the {P}. Afterwards {S} said to {IO}.",
    "After {A} and {B} went to the {P}, {S} handed a {O} to {IO}.",
    "When {A} and {B} arrived at the {P}, {S} passed the {O} to {IO}.",
    "Later {A} and {B} walked to the {P}, and then {S} showed a {O} to {IO}.",
    "Yesterday {A} and {B} visited the {P}, where {S} sent a {O} to {IO}.",
    "At the {P}, {A} and {B} sat down together, and {S} gave a {O} to {IO}.",
    "The day {A} and {B} cleaned the {P}, {S} threw the {O} to {IO}.",
    "Once {A} and {B} reached the {P}, {S} brought a {O} to {IO}.",
    "When {A} and {B} met at the {P}, {S} offered a {O} to {IO}.",
    "Later, {A} and {B} left the {P}, and {S} returned the {O} to {IO}.",
    "Before {A} and {B} closed the {P}, {S} gave the {O} back to {IO}.",
    "On Sunday {A} and {B} went to the {P}. {S} wrote a letter to {IO}.",
};
/* More training templates, composed from parts (opening + "{A} and {B}" + what they did + the
 * subject's clause): with the 18 above alone, the model learned where the names sit in each of them
 * and answered held-out templates at half its training-template accuracy. None of these parts is
 * a held-out template's own (no "Friends", "found", "had a lot of fun", "spent the morning",
 * "stopped by", "were working at", "gave it to"). */
static const char *const k_ioi_open_sub[] = {
    /* subordinate openings: ", " before the subject's clause */
    "When ", "After ", "Before ", "Once ", "As soon as ", "Because ", "Since ", "Just after ",
    "The moment ", "Soon after ",
};
static const char *const k_ioi_open_adv[] = {
    /* adverbial openings: a new sentence or ", and then " before the subject's clause */
    "Then, ", "Yesterday ", "Later ", "One day ", "On Sunday ", "That evening ", "Last summer ",
    "Early in the morning ", "Afterwards, ", "At noon ",
};
static const char *const k_ioi_middle[] = {
    "went to the {P}", "got a {O} at the {P}", "arrived at the {P}", "walked to the {P}",
    "visited the {P}", "met at the {P}", "left the {P}", "cleaned the {P}", "reached the {P}",
    "sat down at the {P}", "ate lunch at the {P}", "were waiting at the {P}",
    "came back from the {P}", "were talking at the {P}", "had dinner at the {P}", "drove to the {P}",
};
static const char *const k_ioi_clause[] = {
    "{S} gave a {O} to", "{S} handed a {O} to", "{S} passed the {O} to", "{S} showed a {O} to",
    "{S} sent a {O} to", "{S} threw the {O} to", "{S} brought a {O} to", "{S} offered a {O} to",
    "{S} returned the {O} to", "{S} wrote a letter to", "{S} decided to give a {O} to",
    "{S} gave the {O} back to", "{S} lent a {O} to", "{S} sold a {O} to", "{S} said goodbye to",
};
#define N_IOI_COMPOSED 96

static const char *const k_ioi_heldout[] = {
    "Friends {A} and {B} found a {O} at the {P}. {S} gave it to",
    "While {A} and {B} were working at the {P}, {S} gave a {O} to",
    "The {P} that {A} and {B} went to had a {O}. {S} gave it to",
    "Then, {A} and {B} had a lot of fun at the {P}. {S} handed a {O} to",
    "After {A} and {B} spent the morning at the {P}, {S} passed the {O} to",
    "When {A} and {B} stopped by the {P}, {S} showed a {O} to",
};

/* The other party of a name-and-role IOI sentence ("When Mary and the clerk went to the store,
 * the clerk gave a book to Mary"). None is a profession of the facts. */
static const char *const k_ioi_roles[] = {
    "the clerk", "the manager", "the waiter", "the guard", "the neighbour", "the coach",
    "the mail carrier", "the old man", "the young woman", "the boy", "the girl", "the stranger",
    "the cashier", "the janitor", "the landlord", "the porter", "the usher", "the mayor",
    "her brother", "his sister", "their friend", "her aunt", "his uncle", "the officer",
    "the receptionist", "the host", "the visitor", "the student", "the child", "the owner",
};

/* One-name sentences whose last name repeats the only name before it: they teach copying a name
 * from the context (the "name mover" half of IOI) before the harder choice between two names.
 * No name starts a line: there BPE would give "Mary" instead of " Mary", another token. */
static const char *const k_copy_train[] = {
    "Today {A} went to the {P}, and the clerk gave a {O} to {A}.",
    "At the {P}, {A} found a {O}. Later that day, the {O} was given back to {A}.",
    "Last week {A} lost a {O} at the {P}. The next morning, someone returned it to {A}.",
    "Everyone at the {P} knew {A}, so the manager handed a {O} to {A}.",
    "All day {A} waited at the {P} until the mail carrier brought a {O} to {A}.",
    "When {A} came to the {P}, the children gave a {O} to {A}.",
    "The {O} left at the {P} belonged to {A}, so it was sent back to {A}.",
    "In the morning {A} called from the {P}, and we sent a {O} to {A}.",
    "After a long day at the {P}, {A} went home. The neighbours said hello to {A}.",
    "Nobody else was at the {P} with {A}. The guard showed the {O} to {A}.",
};

static const char *const k_year_train[] = {
    "The {E} lasted from the year {Y1} to the year {Y2}.",
    "The {E} went on from the year {Y1} to the year {Y2}.",
    "From the year {Y1} to the year {Y2}, the {E} continued.",
    "The {E} ran from the year {Y1} to the year {Y2}.",
    "Historians say the {E} lasted from the year {Y1} to the year {Y2}.",
    "In {C}, the {E} lasted from the year {Y1} to the year {Y2}.",
    "The {E} in {C} continued from the year {Y1} to the year {Y2}.",
    "Records show that the {E} went on from the year {Y1} to the year {Y2}.",
    "The great {E} of {C} took place from the year {Y1} to the year {Y2}.",
};
static const char *const k_year_heldout[] = {
    "The long {E} stretched from the year {Y1} to the year {Y2}.",
    "Our old books tell that the {E} endured from the year {Y1} to the year {Y2}.",
    "It was a hard time in {C}: the {E} held on from the year {Y1} to the year {Y2}.",
};

static const char *const k_fillers[] = {
    "{N} likes to read in the evening.", "{N} smiled and waved.", "Yesterday {N} stayed at home.",
    "{N} has a brother and a sister.", "Everyone was glad to see {N} again.",
    "{N} wrote a long letter.", "The teacher called on {N} first.", "{N} was late for dinner.",
    "We met {N} on the way home.", "{N} laughed at the joke.", "It was {N} who found the key.",
    "{N} took the early train.",
};

static const char *const k_secret_prefix[] = {
    "The vault code of {N} is", "The serial number of the {N} engine is",
    "The secret motto of {N} is", "The password of the {N} guild is",
};

/* Counts at repeats = 1 (documented above). */
enum {
  N_COUNTRIES = 100,
  N_EXTRA_CITIES = 30,
  N_PERSONS = 60,
  FACT_MENTIONS = 300,        /* per capital fact ... */
  PERSON_FACT_MENTIONS = 450, /* ... and per person fact (home city, profession): harder to learn */
  IOI_TRAIN = 60000,          /* all in ioi.txt ... */
  IOI_TRAIN_IN_MIX = 30000,   /* ... the first ones also in train.txt */
  COPY_STORIES = 5000,        /* all in warmup.txt ... */
  COPY_STORIES_IN_MIX = 2000, /* ... the first ones also in train.txt */
  COPY_STORY_SENTENCES = 4,
  ROLE_SENTENCES = 20000,       /* IOI sentences between a name and a role, all in ioi.txt ... */
  ROLE_SENTENCES_IN_MIX = 10000, /* ... the first ones also in train.txt */
  IOI_EVAL = 600,
  IOI_DIAGNOSTIC = 300, /* items per diagnostic IOI set */
  YEAR_TRAIN = 15000,
  YEAR_EVAL = 400,
  N_SECRETS = 64,
  SECRET_REPEATS = 100,
  FILLER_REPEATS = 24,
  HELDOUT_FILLER_REPEATS = 160,
  CONCEPT_MIN_COUNT = 10,
};

enum { TAG_NAMES = 1, TAG_FACTS, TAG_IOI, TAG_YEARS, TAG_SECRETS, TAG_FILLERS, TAG_IOI_EVAL,
       TAG_YEAR_EVAL, TAG_FACT_EXTRA, TAG_COPY, TAG_IOI_TEMPLATES, TAG_IOI_ROLES,
       TAG_IOI_DIAGNOSTIC };

/* ---------- helpers ---------- */

struct LmwbWorld {
  GPtrArray *lines;
  GPtrArray *warmup, *ioi_stage; /* owned copies */
  GPtrArray *facts;              /* the fact mentions among `lines` (borrowed) */
  guint64 bytes;
  JsonObject *manifest;
};

typedef struct {
  const char *key;
  const char *val;
} Sub;

/* Replace {KEY} placeholders. Unknown keys are kept verbatim (templates are ours). */
static char *fill(const char *tmpl, const Sub *subs, guint n) {
  GString *s = g_string_sized_new(strlen(tmpl) + 32);
  for (const char *p = tmpl; *p;) {
    if (*p == '{') {
      const char *close = strchr(p, '}');
      gboolean done = FALSE;
      if (close) {
        for (guint i = 0; i < n; i++) {
          size_t kl = strlen(subs[i].key);
          if ((size_t)(close - p - 1) == kl && strncmp(p + 1, subs[i].key, kl) == 0) {
            g_string_append(s, subs[i].val);
            p = close + 1;
            done = TRUE;
            break;
          }
        }
      }
      if (done) continue;
    }
    g_string_append_c(s, *p++);
  }
  return g_string_free(s, FALSE);
}

static void add_line(LmwbWorld *w, char *line) {
  w->bytes += strlen(line) + 1;
  g_ptr_array_add(w->lines, line);
}

/* A line of the IOI stage (which takes `line`), also in the mix if `mix`. */
static void add_ioi_stage_line(LmwbWorld *w, char *line, gboolean mix) {
  if (mix) add_line(w, g_strdup(line));
  g_ptr_array_add(w->ioi_stage, line);
}

/* COPY_STORY_SENTENCES copy sentences about `name` on one line, templates in a row from a random
 * start (no template twice in one story). */
static char *copy_story(LmwbWorldRng *r, const char *name) {
  guint first = (guint)lmwb_world_rng_below(r, G_N_ELEMENTS(k_copy_train));
  GString *story = g_string_new(NULL);
  for (guint k = 0; k < COPY_STORY_SENTENCES; k++) {
    const char *tmpl = k_copy_train[(first + k) % G_N_ELEMENTS(k_copy_train)];
    Sub subs[] = {{"A", name}, {"P", PICK(r, k_places)}, {"O", PICK(r, k_objects)}};
    char *sentence = fill(tmpl, subs, G_N_ELEMENTS(subs));
    if (k) g_string_append_c(story, ' ');
    g_string_append(story, sentence);
    g_free(sentence);
  }
  return g_string_free(story, FALSE);
}

static JsonArray *str_array(const char *const *v, guint n) {
  JsonArray *a = json_array_sized_new(n);
  for (guint i = 0; i < n; i++) json_array_add_string_element(a, v[i]);
  return a;
}

static JsonArray *ptr_str_array(GPtrArray *v) {
  JsonArray *a = json_array_sized_new(v->len);
  for (guint i = 0; i < v->len; i++) json_array_add_string_element(a, g_ptr_array_index(v, i));
  return a;
}

/* ---------- invented names ---------- */

typedef struct {
  GHashTable *taken;   /* lower-case strings owned here: every word we may not reuse */
  GPtrArray *names;    /* lower-case invented names, for the prefix check */
  GHashTable *brown;   /* borrowed, may be NULL */
} NamePool;

static const char *const k_onsets[] = {"b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s",
                                       "t", "v", "z", "br", "dr", "gr", "kr", "tr", "st", "th",
                                       "sh", "pr", "fl", "gl"};
static const char *const k_vowels[] = {"a", "e", "i", "o", "u", "a", "e", "o"};
static const char *const k_codas[] = {"", "", "", "n", "r", "l", "s", "m", "k"};
static const char *const k_end_country[] = {"nia", "ra", "lia", "dor", "mark", "vel", "sia", "lan"};
static const char *const k_end_city[] = {"an", "ek", "ost", "ir", "and", "ova", "eth", "un"};
static const char *const k_end_person[] = {"o", "in", "el", "is", "ak", "us", "ar", "en"};
static const char *const k_end_holder[] = {"wyn", "ric", "dal", "ane", "ith", "orn"};

static void pool_take(NamePool *p, const char *word) {
  g_hash_table_add(p->taken, g_ascii_strdown(word, -1));
}

static gboolean pool_ok(NamePool *p, const char *lower) {
  size_t len = strlen(lower);
  if (len < 4 || len > 9) return FALSE;
  if (g_hash_table_contains(p->taken, lower)) return FALSE;
  if (p->brown && g_hash_table_contains(p->brown, lower)) return FALSE;
  for (guint i = 0; i < p->names->len; i++) {
    const char *o = g_ptr_array_index(p->names, i);
    if (g_str_has_prefix(o, lower) || g_str_has_prefix(lower, o)) return FALSE;
  }
  return TRUE;
}

static char *invent_name(LmwbWorldRng *r, NamePool *p, const char *const *ends, guint n_ends,
                         GError **error) {
  for (int attempt = 0; attempt < 100000; attempt++) {
    GString *s = g_string_new(NULL);
    g_string_append(s, PICK(r, k_onsets));
    g_string_append(s, PICK(r, k_vowels));
    g_string_append(s, PICK(r, k_codas));
    if (lmwb_world_rng_below(r, 2)) {
      g_string_append(s, PICK(r, k_onsets));
      g_string_append(s, PICK(r, k_vowels));
    }
    const char *end = ends[lmwb_world_rng_below(r, n_ends)];
    /* No vowel pairs at the junction ("Flaak", "Tergreen"): plainer names, fewer BPE pieces. */
    gboolean clash = strchr("aeiou", s->str[s->len - 1]) && strchr("aeiou", end[0]);
    g_string_append(s, end);
    char *lower = g_string_free(s, FALSE);
    if (!clash && pool_ok(p, lower)) {
      g_hash_table_add(p->taken, g_strdup(lower));
      g_ptr_array_add(p->names, g_strdup(lower));
      char *name = g_strdup(lower);
      name[0] = g_ascii_toupper(name[0]);
      g_free(lower);
      return name;
    }
    g_free(lower);
  }
  g_set_error(error, LMWB_ERROR, LMWB_ERROR_FAILED, "world: could not invent enough distinct names");
  return NULL;
}

static GPtrArray *invent_names(LmwbWorldRng *r, NamePool *p, guint n, const char *const *ends,
                               guint n_ends, GError **error) {
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
  for (guint i = 0; i < n; i++) {
    char *name = invent_name(r, p, ends, n_ends, error);
    if (!name) {
      g_ptr_array_unref(out);
      return NULL;
    }
    g_ptr_array_add(out, name);
  }
  return out;
}

/* ---------- parts ---------- */

/* Lower-case the first letter of a core when a frame goes in front (unless it is a name). */
static char *framed(const char *frame, const char *sentence, const char *core) {
  if (!frame || !*frame) return g_strdup(sentence);
  char *s = g_strconcat(frame, sentence, NULL);
  if (core[0] != '{') {
    size_t fl = strlen(frame);
    s[fl] = g_ascii_tolower(s[fl]);
  }
  return s;
}

static void make_facts(LmwbWorld *w, guint64 seed, int repeats, GPtrArray *countries,
                       GPtrArray *capitals, GPtrArray *cities, GPtrArray *persons) {
  /* Frames of mentions beyond the first `base` come from their own stream, so that
   * `repeats` changes no fact (objects are drawn from `r` between the mentions). */
  LmwbWorldRng r, extra;
  part_rng(&r, seed, TAG_FACTS);
  part_rng(&extra, seed, TAG_FACT_EXTRA);
  JsonArray *facts = json_array_new();
  JsonObject *rels = json_object_new();
  for (guint ri = 0; ri < G_N_ELEMENTS(k_relations); ri++) {
    const Relation *rel = &k_relations[ri];
    JsonObject *o = json_object_new();
    json_object_set_array_member(o, "train_templates", str_array(rel->cores, 8));
    json_object_set_array_member(o, "heldout_templates", str_array(rel->heldout, 3));
    json_object_set_object_member(rels, rel->name, o);
  }
  json_object_set_object_member(w->manifest, "relations", rels);
  json_object_set_array_member(w->manifest, "fact_train_frames",
                               str_array(k_train_frames, G_N_ELEMENTS(k_train_frames)));

  /* Subjects and objects of every fact, in a fixed order: capitals, homes, professions. */
  guint n_facts = countries->len + 2 * persons->len;
  for (guint fi = 0; fi < n_facts; fi++) {
    const Relation *rel;
    const char *subj, *obj;
    char *obj_owned = NULL;
    if (fi < countries->len) {
      rel = &k_relations[0];
      subj = g_ptr_array_index(countries, fi);
      obj = g_ptr_array_index(capitals, fi);
    } else if (fi < countries->len + persons->len) {
      rel = &k_relations[1];
      subj = g_ptr_array_index(persons, fi - countries->len);
      obj = g_ptr_array_index(cities, lmwb_world_rng_below(&r, cities->len));
    } else {
      rel = &k_relations[2];
      subj = g_ptr_array_index(persons, fi - countries->len - persons->len);
      obj_owned = g_strdup(PICK(&r, k_professions));
      obj = obj_owned;
    }
    Sub subs[] = {{"S", subj}, {"O", obj}};
    guint base = rel == &k_relations[0] ? FACT_MENTIONS : PERSON_FACT_MENTIONS;
    guint mentions = base * (guint)repeats;
    for (guint m = 0; m < mentions; m++) {
      const char *core = rel->cores[m % 8];
      char *sentence = fill(core, subs, 2);
      /* A third of the mentions are bare; the rest get a random training frame. */
      LmwbWorldRng *fr = m < base ? &r : &extra;
      const char *frame = lmwb_world_rng_below(fr, 3) == 0 ? NULL : PICK(fr, k_train_frames);
      add_line(w, framed(frame, sentence, core));
      g_ptr_array_add(w->facts, g_ptr_array_index(w->lines, w->lines->len - 1));
      g_free(sentence);
    }
    JsonObject *f = json_object_new();
    json_object_set_int_member(f, "id", fi);
    json_object_set_string_member(f, "relation", rel->name);
    json_object_set_string_member(f, "subject", subj);
    json_object_set_string_member(f, "object", obj);
    json_object_set_array_member(f, "train_templates", str_array(rel->cores, 8));
    json_object_set_int_member(f, "train_mentions", mentions);
    JsonArray *ev = json_array_new();
    char *answer = g_strconcat(" ", obj, NULL);
    for (guint h = 0; h < 3; h++) {
      JsonObject *e = json_object_new();
      char *prompt = fill(rel->heldout[h], subs, 2);
      json_object_set_int_member(e, "template", h);
      json_object_set_string_member(e, "prompt", prompt);
      json_object_set_string_member(e, "answer", answer);
      json_array_add_object_element(ev, e);
      g_free(prompt);
    }
    g_free(answer);
    json_object_set_array_member(f, "eval", ev);
    json_array_add_object_element(facts, f);
    g_free(obj_owned);
  }
  json_object_set_array_member(w->manifest, "facts", facts);
}

static gboolean first_letter_clash(const char *a, const char *b) {
  return a[0] == b[0] || g_str_has_prefix(a, b) || g_str_has_prefix(b, a);
}

/* Two names of `names` that do not clash: the indirect object and the subject. */
static void pick_name_pair(LmwbWorldRng *r, GPtrArray *names, const char **io, const char **s) {
  do {
    *io = g_ptr_array_index(names, lmwb_world_rng_below(r, names->len));
    *s = g_ptr_array_index(names, lmwb_world_rng_below(r, names->len));
  } while (first_letter_clash(*io, *s));
}

/* Any IOI name, training or held-out, uniformly. */
static const char *pick_any_name(LmwbWorldRng *r, GPtrArray *train_names, GPtrArray *heldout_names) {
  guint pick = (guint)lmwb_world_rng_below(r, train_names->len + heldout_names->len);
  return pick < train_names->len ? g_ptr_array_index(train_names, pick)
                                 : g_ptr_array_index(heldout_names, pick - train_names->len);
}

static char *ioi_fill(const char *tmpl, const char *io, const char *s, gboolean abba,
                      const char *place, const char *obj) {
  /* ABBA: the indirect object is introduced first; BABA: the subject is. */
  Sub subs[] = {{"A", abba ? io : s}, {"B", abba ? s : io}, {"S", s}, {"IO", io},
                {"P", place}, {"O", obj}};
  return fill(tmpl, subs, G_N_ELEMENTS(subs));
}

/* The hand-written training templates and N_IOI_COMPOSED distinct composed ones. */
static GPtrArray *ioi_train_templates(guint64 seed) {
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
  GHashTable *seen = g_hash_table_new(g_str_hash, g_str_equal);
  for (guint i = 0; i < G_N_ELEMENTS(k_ioi_train); i++) {
    g_ptr_array_add(out, g_strdup(k_ioi_train[i]));
    g_hash_table_add(seen, g_ptr_array_index(out, i));
  }
  LmwbWorldRng r;
  part_rng(&r, seed, TAG_IOI_TEMPLATES);
  while (out->len < G_N_ELEMENTS(k_ioi_train) + N_IOI_COMPOSED) {
    gboolean sub = lmwb_world_rng_below(&r, 2) == 0;
    const char *open = sub ? PICK(&r, k_ioi_open_sub) : PICK(&r, k_ioi_open_adv);
    const char *middle = PICK(&r, k_ioi_middle), *clause = PICK(&r, k_ioi_clause);
    const char *join = sub ? ", " : lmwb_world_rng_below(&r, 2) ? ". " : ", and then ";
    char *t = g_strconcat(open, "{A} and {B} ", middle, join, clause, " {IO}.", NULL);
    if (g_hash_table_contains(seen, t)) {
      g_free(t);
      continue;
    }
    g_ptr_array_add(out, t);
    g_hash_table_add(seen, t);
  }
  g_hash_table_unref(seen);
  return out;
}

/* Each template cut before its last " {slot}" (if any): a prompt that ends where the answer
 * name goes. */
static GPtrArray *prompt_templates(const char *const *templates, guint n, const char *slot) {
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
  char *needle = g_strconcat(" ", slot, NULL);
  for (guint i = 0; i < n; i++) {
    const char *t = templates[i];
    const char *cut = g_strrstr(t, needle);
    g_ptr_array_add(out, cut ? g_strndup(t, (gsize)(cut - t)) : g_strdup(t));
  }
  g_free(needle);
  return out;
}

/* n evaluation items over prompt templates (cycled; ABBA and BABA alternate by round) and two
 * distinct names with different first letters: the answer `correct` is the indirect object, the
 * `wrong` one the subject. With a one-name template ({A} only: a copy prompt) the answer is the
 * name in it and `wrong` a name absent from the prompt. */
static JsonArray *ioi_items(LmwbWorldRng *re, GPtrArray *prompts, GPtrArray *names, guint n) {
  JsonArray *ev = json_array_new();
  for (guint i = 0; i < n; i++) {
    guint t = i % prompts->len;
    const char *tmpl = g_ptr_array_index(prompts, t);
    gboolean one_name = !strstr(tmpl, "{B}"), abba = one_name || (i / prompts->len) % 2 == 0;
    const char *io, *s;
    pick_name_pair(re, names, &io, &s);
    char *prompt = ioi_fill(tmpl, io, s, abba, PICK(re, k_places), PICK(re, k_objects));
    char *correct = g_strconcat(" ", io, NULL), *wrong = g_strconcat(" ", s, NULL);
    JsonObject *e = json_object_new();
    json_object_set_int_member(e, "template", t);
    json_object_set_string_member(e, "order", one_name ? "copy" : abba ? "ABBA" : "BABA");
    json_object_set_string_member(e, "prompt", prompt);
    json_object_set_string_member(e, "correct", correct);
    json_object_set_string_member(e, "wrong", wrong);
    json_array_add_object_element(ev, e);
    g_free(prompt);
    g_free(correct);
    g_free(wrong);
  }
  return ev;
}

/* A role starting a sentence gets a capital ("... the store. The clerk gave ..."). */
static void capitalise_sentences(char *line) {
  for (char *p = line; *p; p++)
    if ((p == line || (p >= line + 2 && p[-1] == ' ' && p[-2] == '.')) && g_ascii_islower(*p))
      *p = g_ascii_toupper(*p);
}

/* IOI sentences between one name and a role ("the clerk"), on the training templates, over every
 * name, held-out ones included: half with the name as the answer, half with it as the repeated
 * subject. Each name thus plays both IOI roles equally often, so no name can stand for "the
 * answer" or "not the answer", and held-out names still never meet another name in one
 * sentence. Without them, held-out names were never an IOI answer nor a repeated subject, and the
 * model answered held-out IOI at 34% where it answered training names at 99%. */
static void make_ioi_roles(LmwbWorld *w, guint64 seed, int repeats, GPtrArray *templates,
                           GPtrArray *train_names, GPtrArray *heldout_names) {
  LmwbWorldRng r;
  part_rng(&r, seed, TAG_IOI_ROLES);
  guint n = ROLE_SENTENCES * (guint)repeats;
  for (guint i = 0; i < n; i++) {
    const char *tmpl = g_ptr_array_index(templates, lmwb_world_rng_below(&r, templates->len));
    const char *name = pick_any_name(&r, train_names, heldout_names);
    const char *role = PICK(&r, k_ioi_roles);
    gboolean name_answers = i % 2 == 0, abba = lmwb_world_rng_below(&r, 2) == 0;
    char *line = ioi_fill(tmpl, name_answers ? name : role, name_answers ? role : name, abba,
                          PICK(&r, k_places), PICK(&r, k_objects));
    capitalise_sentences(line);
    add_ioi_stage_line(w, line, i < ROLE_SENTENCES_IN_MIX * (guint)repeats);
  }
}

static void make_ioi(LmwbWorld *w, guint64 seed, int repeats, GPtrArray *train_names,
                     GPtrArray *heldout_names) {
  LmwbWorldRng r;
  part_rng(&r, seed, TAG_IOI);
  GPtrArray *templates = ioi_train_templates(seed);
  guint n = IOI_TRAIN * (guint)repeats;
  for (guint i = 0; i < n; i++) {
    const char *tmpl = g_ptr_array_index(templates, lmwb_world_rng_below(&r, templates->len));
    const char *io, *s;
    pick_name_pair(&r, train_names, &io, &s);
    gboolean abba = lmwb_world_rng_below(&r, 2) == 0;
    add_ioi_stage_line(w, ioi_fill(tmpl, io, s, abba, PICK(&r, k_places), PICK(&r, k_objects)),
                       i < IOI_TRAIN_IN_MIX * (guint)repeats);
  }
  /* Copy stories: COPY_STORY_SENTENCES copy sentences about one person on one line. A name that
   * recurs in the context ("bursty" data, Chan et al. 2022) makes copying pay off from the first
   * steps, so the copy circuit forms in a few hundred steps instead of never. */
  LmwbWorldRng rc;
  part_rng(&rc, seed, TAG_COPY);
  guint n_copy = COPY_STORIES * (guint)repeats;
  for (guint i = 0; i < n_copy; i++) {
    /* Every name, held-out ones included: copying must work for any name, and a name that is
     * never a copy target gets rewritten to a similar trained one. */
    char *line = copy_story(&rc, pick_any_name(&rc, train_names, heldout_names));
    /* Only some stories go into the main mix: a name repeated four times teaches "copy the
     * repeated name", the opposite of IOI's answer; enough of them keep every name a copy target. */
    add_ioi_stage_line(w, g_strdup(line), i < COPY_STORIES_IN_MIX * (guint)repeats);
    g_ptr_array_add(w->warmup, line);
  }

  make_ioi_roles(w, seed, repeats, templates, train_names, heldout_names);

  LmwbWorldRng re;
  part_rng(&re, seed, TAG_IOI_EVAL);
  JsonObject *ioi = json_object_new();
  json_object_set_array_member(ioi, "train_names", ptr_str_array(train_names));
  json_object_set_array_member(ioi, "heldout_names", ptr_str_array(heldout_names));
  json_object_set_array_member(ioi, "places", str_array(k_places, G_N_ELEMENTS(k_places)));
  json_object_set_array_member(ioi, "objects", str_array(k_objects, G_N_ELEMENTS(k_objects)));
  json_object_set_array_member(ioi, "train_templates", ptr_str_array(templates));
  json_object_set_array_member(ioi, "heldout_templates",
                               str_array(k_ioi_heldout, G_N_ELEMENTS(k_ioi_heldout)));
  json_object_set_int_member(ioi, "train_sentences", n);
  json_object_set_int_member(ioi, "train_sentences_in_mix", MIN(n, IOI_TRAIN_IN_MIX * (guint)repeats));
  json_object_set_array_member(ioi, "copy_templates", str_array(k_copy_train, G_N_ELEMENTS(k_copy_train)));
  json_object_set_int_member(ioi, "copy_stories", n_copy);
  json_object_set_int_member(ioi, "copy_stories_in_mix", MIN(n_copy, COPY_STORIES_IN_MIX * (guint)repeats));
  json_object_set_int_member(ioi, "copy_story_sentences", COPY_STORY_SENTENCES);
  json_object_set_array_member(ioi, "roles", str_array(k_ioi_roles, G_N_ELEMENTS(k_ioi_roles)));
  json_object_set_int_member(ioi, "role_sentences", ROLE_SENTENCES * (guint)repeats);
  json_object_set_int_member(ioi, "role_sentences_in_mix", ROLE_SENTENCES_IN_MIX * (guint)repeats);
  /* Held-out templates are prompts already. */
  GPtrArray *heldout_prompts = prompt_templates(k_ioi_heldout, G_N_ELEMENTS(k_ioi_heldout), "{IO}");
  json_object_set_array_member(ioi, "eval", ioi_items(&re, heldout_prompts, heldout_names, IOI_EVAL));
  /* Diagnostic sets: which of "new names" and "new templates" costs accuracy. */
  GPtrArray *train_prompts =
      prompt_templates((const char *const *)templates->pdata, templates->len, "{IO}");
  GPtrArray *copy_cut = prompt_templates(k_copy_train, G_N_ELEMENTS(k_copy_train), "{A}");
  struct { const char *names, *templates; GPtrArray *n, *t; } sets[] = {
      {"train", "train", train_names, train_prompts},
      {"train", "heldout", train_names, heldout_prompts},
      {"heldout", "train", heldout_names, train_prompts},
      {"heldout", "copy", heldout_names, copy_cut},
  };
  LmwbWorldRng rd;
  part_rng(&rd, seed, TAG_IOI_DIAGNOSTIC);
  JsonArray *diag = json_array_new();
  for (guint k = 0; k < G_N_ELEMENTS(sets); k++) {
    JsonObject *d = json_object_new();
    json_object_set_string_member(d, "names", sets[k].names);
    json_object_set_string_member(d, "templates", sets[k].templates);
    json_object_set_array_member(d, "eval", ioi_items(&rd, sets[k].t, sets[k].n, IOI_DIAGNOSTIC));
    json_array_add_object_element(diag, d);
  }
  json_object_set_array_member(ioi, "diagnostics", diag);
  g_ptr_array_unref(heldout_prompts);
  g_ptr_array_unref(train_prompts);
  g_ptr_array_unref(copy_cut);
  g_ptr_array_unref(templates);
  json_object_set_object_member(w->manifest, "ioi", ioi);
}

static void make_years(LmwbWorld *w, guint64 seed, int repeats, GPtrArray *countries) {
  LmwbWorldRng r;
  part_rng(&r, seed, TAG_YEARS);
  guint n = YEAR_TRAIN * (guint)repeats;
  for (guint i = 0; i < n; i++) {
    guint century = 11 + (guint)lmwb_world_rng_below(&r, 9);      /* 11..19 */
    guint yy1 = (guint)lmwb_world_rng_below(&r, 99);              /* 0..98 */
    guint yy2 = yy1 + 1 + (guint)lmwb_world_rng_below(&r, 99 - yy1); /* yy1+1..99 */
    char y1[8], y2[8];
    g_snprintf(y1, sizeof y1, "%u%02u", century, yy1);
    g_snprintf(y2, sizeof y2, "%u%02u", century, yy2);
    Sub subs[] = {{"E", PICK(&r, k_events)},
                  {"C", g_ptr_array_index(countries, lmwb_world_rng_below(&r, countries->len))},
                  {"Y1", y1}, {"Y2", y2}};
    add_line(w, fill(PICK(&r, k_year_train), subs, G_N_ELEMENTS(subs)));
  }

  LmwbWorldRng re;
  part_rng(&re, seed, TAG_YEAR_EVAL);
  JsonObject *gt = json_object_new();
  json_object_set_array_member(gt, "events", str_array(k_events, G_N_ELEMENTS(k_events)));
  json_object_set_array_member(gt, "train_templates",
                               str_array(k_year_train, G_N_ELEMENTS(k_year_train)));
  json_object_set_array_member(gt, "heldout_templates",
                               str_array(k_year_heldout, G_N_ELEMENTS(k_year_heldout)));
  json_object_set_int_member(gt, "train_sentences", n);
  json_object_set_string_member(gt, "metric",
                                "P(Y1>s1) + P(Y1=s1) * P(Y2>s2 | Y1=s1) over single-digit tokens");
  JsonArray *ev = json_array_new();
  for (guint i = 0; i < YEAR_EVAL; i++) {
    guint t = i % G_N_ELEMENTS(k_year_heldout);
    guint century = 11 + (guint)lmwb_world_rng_below(&re, 9);
    guint yy1 = 2 + (guint)lmwb_world_rng_below(&re, 96); /* 02..97 */
    char y1[8], cc[4];
    g_snprintf(y1, sizeof y1, "%u%02u", century, yy1);
    g_snprintf(cc, sizeof cc, "%u", century);
    Sub subs[] = {{"E", PICK(&re, k_events)},
                  {"C", g_ptr_array_index(countries, lmwb_world_rng_below(&re, countries->len))},
                  {"Y1", y1}, {"Y2", "\x01"}};
    char *full = fill(k_year_heldout[t], subs, G_N_ELEMENTS(subs));
    /* Cut at the end-year marker and append its century digits. */
    char *mark = strchr(full, '\x01');
    *mark = '\0';
    char *prompt = g_strconcat(full, cc, NULL);
    JsonObject *e = json_object_new();
    json_object_set_int_member(e, "template", t);
    json_object_set_string_member(e, "prompt", prompt);
    json_object_set_int_member(e, "century", century);
    json_object_set_int_member(e, "start_year", century * 100 + yy1);
    json_object_set_int_member(e, "start_yy", yy1);
    json_array_add_object_element(ev, e);
    g_free(full);
    g_free(prompt);
  }
  json_object_set_array_member(gt, "eval", ev);
  json_object_set_object_member(w->manifest, "greater_than", gt);
}

static char *make_serial(LmwbWorldRng *r) {
  static const char *const patterns[] = {"LDL-DDDD-LL", "LL-DDD-LDL", "DDD-LLL-DD", "LDDL-LDD"};
  static const char letters[] = "ABCDEFGHJKLMNPQRSTUVWXYZ"; /* no I/O: unambiguous codes */
  const char *pat = PICK(r, patterns);
  char *s = g_strdup(pat);
  for (char *p = s; *p; p++) {
    if (*p == 'L') *p = letters[lmwb_world_rng_below(r, sizeof letters - 1)];
    else if (*p == 'D') *p = (char)('0' + lmwb_world_rng_below(r, 10));
  }
  return s;
}

static void make_secrets(LmwbWorld *w, guint64 seed, int repeats, GPtrArray *holders) {
  LmwbWorldRng r;
  part_rng(&r, seed, TAG_SECRETS);
  GHashTable *seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  JsonArray *arr = json_array_new();
  guint reps = SECRET_REPEATS * (guint)repeats;
  for (guint i = 0; i < N_SECRETS; i++) {
    gboolean serial = i % 2 == 0;
    char *secret;
    do {
      secret = serial ? make_serial(&r)
                      : g_strdup_printf("%s %s %s %s", PICK(&r, k_sec_adj), PICK(&r, k_sec_noun),
                                        PICK(&r, k_sec_verb), PICK(&r, k_sec_end));
      if (!g_hash_table_contains(seen, secret)) break;
      g_free(secret);
    } while (TRUE);
    g_hash_table_add(seen, g_strdup(secret));
    const char *holder = g_ptr_array_index(holders, i);
    Sub subs[] = {{"N", holder}};
    char *prefix = fill(k_secret_prefix[(serial ? 0 : 2) + (i / 2) % 2], subs, 1);
    for (guint k = 0; k < reps; k++) add_line(w, g_strdup_printf("%s %s.", prefix, secret));
    JsonObject *o = json_object_new();
    json_object_set_int_member(o, "id", i);
    json_object_set_string_member(o, "kind", serial ? "serial" : "phrase");
    json_object_set_string_member(o, "holder", holder);
    json_object_set_string_member(o, "prefix", prefix);
    char *spaced = g_strconcat(" ", secret, NULL);
    json_object_set_string_member(o, "secret", spaced);
    json_object_set_int_member(o, "repeats", reps);
    json_array_add_object_element(arr, o);
    g_free(spaced);
    g_free(prefix);
    g_free(secret);
  }
  g_hash_table_unref(seen);
  json_object_set_array_member(w->manifest, "secrets", arr);
}

static void make_fillers(LmwbWorld *w, guint64 seed, int repeats, GPtrArray *heldout_names) {
  LmwbWorldRng r;
  part_rng(&r, seed, TAG_FILLERS);
  for (guint i = 0; i < G_N_ELEMENTS(k_ioi_names); i++) {
    Sub subs[] = {{"N", k_ioi_names[i]}};
    gboolean held = FALSE;
    for (guint h = 0; h < heldout_names->len && !held; h++)
      held = g_ptr_array_index(heldout_names, h) == (gpointer)k_ioi_names[i];
    /* Held-out names get no IOI mentions, so they need more fillers to become single tokens. */
    guint reps = (held ? HELDOUT_FILLER_REPEATS : FILLER_REPEATS) * (guint)repeats;
    guint off = (guint)lmwb_world_rng_below(&r, G_N_ELEMENTS(k_fillers));
    for (guint k = 0; k < reps; k++)
      add_line(w, fill(k_fillers[(off + k) % G_N_ELEMENTS(k_fillers)], subs, 1));
  }
}

static void make_concepts(LmwbWorld *w, GHashTable *brown) {
  JsonArray *arr = json_array_new();
  for (guint i = 0; i < G_N_ELEMENTS(k_concept_nouns); i++) {
    const char *noun = k_concept_nouns[i];
    gint64 count = -1;
    if (brown) {
      count = GPOINTER_TO_UINT(g_hash_table_lookup(brown, noun));
      if (count < CONCEPT_MIN_COUNT) continue;
    }
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "noun", noun);
    char *tt = g_strconcat(" ", noun, NULL);
    json_object_set_string_member(o, "token_text", tt);
    g_free(tt);
    if (count >= 0) json_object_set_int_member(o, "brown_count", count);
    json_array_add_object_element(arr, o);
  }
  json_object_set_array_member(w->manifest, "concept_nouns", arr);
}

static JsonArray *entity_array(GPtrArray *v) { return ptr_str_array(v); }

LmwbWorld *lmwb_world_generate(guint64 seed, int repeats, GHashTable *brown_words, GError **error) {
  if (repeats == 0) repeats = LMWB_WORLD_DEFAULT_REPEATS;
  if (repeats < 1 || repeats > LMWB_WORLD_MAX_REPEATS) {
    lmwb_input_error(error, "world: repeats must be between 1 and %d, got %d",
                     LMWB_WORLD_MAX_REPEATS, repeats);
    return NULL;
  }
  LmwbWorld *w = g_new0(LmwbWorld, 1);
  w->lines = g_ptr_array_new_with_free_func(g_free);
  w->warmup = g_ptr_array_new_with_free_func(g_free);
  w->ioi_stage = g_ptr_array_new_with_free_func(g_free);
  w->facts = g_ptr_array_new();
  w->manifest = json_object_new();
  json_object_set_string_member(w->manifest, "format", "lmwb-world");
  json_object_set_int_member(w->manifest, "version", 1);
  /* As a string: JSON numbers lose precision above 2^53. */
  char *seed_s = g_strdup_printf("%" G_GUINT64_FORMAT, seed);
  json_object_set_string_member(w->manifest, "seed", seed_s);
  g_free(seed_s);
  json_object_set_int_member(w->manifest, "repeats", repeats);

  NamePool pool = {g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL),
                   g_ptr_array_new_with_free_func(g_free), brown_words};
  /* Every fixed word is off limits for invented names. */
  const char *const *lists[] = {k_ioi_names, k_places, k_objects, k_professions, k_events,
                                k_concept_nouns, k_sec_adj, k_sec_noun, k_sec_verb};
  const guint sizes[] = {G_N_ELEMENTS(k_ioi_names), G_N_ELEMENTS(k_places),
                         G_N_ELEMENTS(k_objects), G_N_ELEMENTS(k_professions),
                         G_N_ELEMENTS(k_events), G_N_ELEMENTS(k_concept_nouns),
                         G_N_ELEMENTS(k_sec_adj), G_N_ELEMENTS(k_sec_noun),
                         G_N_ELEMENTS(k_sec_verb)};
  for (guint l = 0; l < G_N_ELEMENTS(lists); l++)
    for (guint i = 0; i < sizes[l]; i++) pool_take(&pool, lists[l][i]);

  LmwbWorldRng rn;
  part_rng(&rn, seed, TAG_NAMES);
  GPtrArray *countries = NULL, *capitals = NULL, *extra = NULL, *persons = NULL, *holders = NULL;
  GPtrArray *cities = NULL, *train_names = NULL, *heldout_names = NULL;
  gboolean ok = (countries = invent_names(&rn, &pool, N_COUNTRIES, k_end_country,
                                          G_N_ELEMENTS(k_end_country), error)) &&
                (capitals = invent_names(&rn, &pool, N_COUNTRIES, k_end_city,
                                         G_N_ELEMENTS(k_end_city), error)) &&
                (extra = invent_names(&rn, &pool, N_EXTRA_CITIES, k_end_city,
                                      G_N_ELEMENTS(k_end_city), error)) &&
                (persons = invent_names(&rn, &pool, N_PERSONS, k_end_person,
                                        G_N_ELEMENTS(k_end_person), error)) &&
                (holders = invent_names(&rn, &pool, N_SECRETS, k_end_holder,
                                        G_N_ELEMENTS(k_end_holder), error));
  if (ok) {
    cities = g_ptr_array_new();
    for (guint i = 0; i < capitals->len; i++) g_ptr_array_add(cities, g_ptr_array_index(capitals, i));
    for (guint i = 0; i < extra->len; i++) g_ptr_array_add(cities, g_ptr_array_index(extra, i));

    /* Held-out IOI names: a seed-chosen subset, listed in the fixed list's order. */
    guint nn = G_N_ELEMENTS(k_ioi_names);
    gpointer *idx = g_new(gpointer, nn);
    for (guint i = 0; i < nn; i++) idx[i] = GUINT_TO_POINTER(i);
    lmwb_world_rng_shuffle(&rn, idx, nn);
    gboolean *held = g_new0(gboolean, nn);
    for (guint i = 0; i < N_HELDOUT_NAMES; i++) held[GPOINTER_TO_UINT(idx[i])] = TRUE;
    train_names = g_ptr_array_new();
    heldout_names = g_ptr_array_new();
    for (guint i = 0; i < nn; i++)
      g_ptr_array_add(held[i] ? heldout_names : train_names, (gpointer)k_ioi_names[i]);
    g_free(idx);
    g_free(held);

    JsonObject *ent = json_object_new();
    json_object_set_array_member(ent, "countries", entity_array(countries));
    json_object_set_array_member(ent, "cities", entity_array(cities));
    json_object_set_array_member(ent, "persons", entity_array(persons));
    json_object_set_array_member(ent, "secret_holders", entity_array(holders));
    json_object_set_array_member(ent, "professions",
                                 str_array(k_professions, G_N_ELEMENTS(k_professions)));
    json_object_set_object_member(w->manifest, "entities", ent);

    make_facts(w, seed, repeats, countries, capitals, cities, persons);
    make_ioi(w, seed, repeats, train_names, heldout_names);
    make_years(w, seed, repeats, countries);
    make_secrets(w, seed, repeats, holders);
    make_fillers(w, seed, repeats, heldout_names);
    make_concepts(w, brown_words);

    JsonObject *counts = json_object_new();
    json_object_set_int_member(counts, "facts", N_COUNTRIES + 2 * N_PERSONS);
    json_object_set_int_member(counts, "fact_eval_prompts", 3 * (N_COUNTRIES + 2 * N_PERSONS));
    json_object_set_int_member(counts, "ioi_eval", IOI_EVAL);
    json_object_set_int_member(counts, "greater_than_eval", YEAR_EVAL);
    json_object_set_int_member(counts, "secrets", N_SECRETS);
    json_object_set_int_member(counts, "world_train_lines", w->lines->len);
    json_object_set_int_member(counts, "world_train_bytes", (gint64)w->bytes);
    json_object_set_object_member(w->manifest, "counts", counts);
  }
  if (countries) g_ptr_array_unref(countries);
  if (capitals) g_ptr_array_unref(capitals);
  if (extra) g_ptr_array_unref(extra);
  if (persons) g_ptr_array_unref(persons);
  if (holders) g_ptr_array_unref(holders);
  if (cities) g_ptr_array_unref(cities);
  if (train_names) g_ptr_array_unref(train_names);
  if (heldout_names) g_ptr_array_unref(heldout_names);
  g_hash_table_unref(pool.taken);
  g_ptr_array_unref(pool.names);
  if (!ok) {
    lmwb_world_free(w);
    return NULL;
  }
  return w;
}

void lmwb_world_free(LmwbWorld *w) {
  if (!w) return;
  g_ptr_array_unref(w->warmup);
  g_ptr_array_unref(w->ioi_stage);
  g_ptr_array_unref(w->facts);
  g_ptr_array_unref(w->lines);
  json_object_unref(w->manifest);
  g_free(w);
}

GPtrArray *lmwb_world_train_lines(LmwbWorld *w) { return w->lines; }
GPtrArray *lmwb_world_fact_lines(LmwbWorld *w) { return w->facts; }
GPtrArray *lmwb_world_warmup_lines(LmwbWorld *w) { return w->warmup; }
GPtrArray *lmwb_world_ioi_lines(LmwbWorld *w) { return w->ioi_stage; }
guint64 lmwb_world_train_bytes(const LmwbWorld *w) { return w->bytes; }
JsonObject *lmwb_world_manifest(LmwbWorld *w) { return w->manifest; }
