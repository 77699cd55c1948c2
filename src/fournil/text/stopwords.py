"""Stop words for French and English, in two sizes.

`GOPHER_STOP_WORDS` are the short lists the Gopher "has enough stop words" rule counts:
- French: the list FineWeb-2 tuned for French (huggingface/fineweb-2, `configs/fra_Latn.yml`,
  `stopwords`), with its elided forms `l'` and `d'`;
- English: datatrove's `GopherQualityFilter.STOP_WORDS`, from the Gopher paper.

`STOP_WORDS` are the wider function-word sets behind the stop-word share and the OCR-noise
score: the Snowball stop lists (snowballstem.org/algorithms/{french,english}/stop.txt,
BSD-3-Clause; the same lists as NLTK's `stopwords` corpus), French with the forms Snowball
leaves commented out, plus frequent function words and elided forms added by hand (marked).
Tokens are compared lowercased, with the typographic apostrophe folded to `'`.
"""

from __future__ import annotations

GOPHER_STOP_WORDS: dict[str, frozenset[str]] = {
    "fr": frozenset("de la le et à en l' des du les est d' un une il dans par au".split()),
    "en": frozenset("the be to of and that have with".split()),
}

_SNOWBALL_FR = """
au aux avec ce ces dans de des du elle en et eux il ils je la le les leur lui ma mais me même
mes moi mon ne nos notre nous on ou par pas pour qu que qui sa se ses son sur ta te tes toi
ton tu un une vos votre vous c d j l à m n s t y été étée étées étés étant étante étants
étantes suis es est sommes êtes sont serai seras sera serons serez seront serais serait
serions seriez seraient étais était étions étiez étaient fus fut fûmes fûtes furent sois
soit soyons soyez soient fusse fusses fût fussions fussiez fussent ayant ayante ayantes
ayants eu eue eues eus ai as avons avez ont aurai auras aura aurons aurez auront aurais
aurait aurions auriez auraient avais avait avions aviez avaient eut eûmes eûtes eurent aie
aies ait ayons ayez aient eusse eusses eût eussions eussiez eussent
ceci cela celà cet cette ici leurs quel quels quelle quelles sans soi
"""

# added by hand: elided forms, and function words frequent in 17th-19th c. and modern prose
_EXTRA_FR = """
c' d' j' l' m' n' s' t' qu' jusqu' lorsqu' puisqu' quoiqu' presqu' quelqu'
a ça où là si ni or car donc puis alors aussi ainsi encore déjà enfin comme comment
quand dont quoi lequel laquelle lesquels lesquelles auquel auxquels duquel desquels
plus moins très trop peu bien mal tant tout toute tous toutes rien personne aucun aucune
chaque autre autres même mêmes tel telle tels telles quelque quelques plusieurs certains
celui celle ceux celles non oui ne pas point jamais toujours souvent parfois aujourd'hui
chez vers sous entre contre depuis pendant avant après selon parmi malgré envers hors
dès devant derrière durant sauf outre voici voilà lorsque puisque parce quoique tandis
afin jusque jusqu' cependant pourtant néanmoins toutefois ensuite ailleurs partout
ici-bas là-bas peut-être mien mienne tien sien leur nôtre vôtre moi-même lui-même
elle-même soi-même fait faire dit dire
"""

_SNOWBALL_EN = """
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself
she her hers herself it its itself they them their theirs themselves what which who whom
this that these those am is are was were be been being have has had having do does did
doing would should could ought i'm you're he's she's it's we're they're i've you've we've
they've i'd you'd he'd she'd we'd they'd i'll you'll he'll she'll we'll they'll isn't
aren't wasn't weren't hasn't haven't hadn't doesn't don't didn't won't wouldn't shan't
shouldn't can't cannot couldn't mustn't let's that's who's what's here's there's when's
where's why's how's a an the and but if or because as until while of at by for with about
against between into through during before after above below to from up down in out on
off over under again further then once here there when where why how all any both each
few more most other some such no nor not only own same so than too very
"""

# added by hand: modals and frequent function words the Snowball list leaves out
_EXTRA_EN = """
can will shall may might must also however upon within without among per via yet
ever never always often still just even much many every either neither whether
"""

STOP_WORDS: dict[str, frozenset[str]] = {
    "fr": frozenset((_SNOWBALL_FR + _EXTRA_FR).split()),
    "en": frozenset((_SNOWBALL_EN + _EXTRA_EN).split()),
}
