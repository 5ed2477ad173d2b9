"""Fixed vocabularies for trap-address local parts.

These lists are part of the address format: an address issued today must decode in ten years, so
never reorder, edit or extend them (a new format gets a new version and new lists). Each list holds
exactly 256 unique lowercase ASCII words, i.e. carries 8 bits.
"""

from __future__ import annotations

_FIRST = """
james mary john patricia robert jennifer michael linda william elizabeth david barbara richard
susan joseph jessica thomas sarah charles karen daniel nancy matthew lisa anthony betty mark
margaret donald sandra steven ashley paul kimberly andrew emily joshua donna kenneth michelle
kevin dorothy brian carol george amanda edward melissa ronald deborah timothy stephanie jason
rebecca jeffrey sharon ryan laura jacob cynthia gary kathleen nicholas amy eric angela jonathan
shirley stephen anna larry brenda justin pamela scott emma brandon nicole benjamin helen samuel
samantha gregory katherine frank christine alexander debra raymond rachel patrick carolyn jack
janet dennis catherine jerry maria tyler heather aaron diane jose ruth adam julie henry olivia
nathan joyce douglas virginia zachary victoria peter kelly kyle lauren walter christina ethan
joan jeremy evelyn harold judith keith megan christian andrea roger cheryl noah hannah gerald
jacqueline carl martha terry gloria sean teresa austin ann arthur sara lawrence madison jesse
frances dylan kathryn bryan janice joe jean jordan abigail billy alice bruce judy albert sophia
willie grace gabriel denise logan amber alan doris juan marilyn wayne danielle roy beverly ralph
isabella randy theresa eugene diana vincent natalie russell brittany elijah charlotte louis
marie bobby kayla philip alexis johnny lori howard tina fred clara hugo ines lars nina otto
paula rosa sven tomas ugo vera yusuf zoe ahmed bianca chen dmitri elena fatima goran hana
ivan jana kenji lena milan nadia oscar petra quinn rafael sofia tariq ursula viktor wanda
xavier yara zara anders birgit carlos dagmar erik freya gunnar hilde ingrid jonas karin
leo mila ruby felix iris jasper luna owen ivy miles
""".split()  # noqa: SIM905 - one readable block per list

_LAST = """
smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez lopez
gonzalez wilson anderson thomas taylor moore jackson martin lee perez thompson white harris
sanchez clark ramirez lewis robinson walker young allen king wright scott torres nguyen hill
flores green adams nelson baker hall rivera campbell mitchell carter roberts gomez phillips
evans turner diaz parker cruz edwards collins reyes stewart morris morales murphy cook rogers
gutierrez ortiz morgan cooper peterson bailey reed kelly howard ramos kim cox ward richardson
watson brooks chavez wood james bennett gray mendoza ruiz hughes price alvarez castillo sanders
patel myers long ross foster jimenez powell jenkins perry russell sullivan bell coleman butler
henderson barnes gonzales fisher vasquez simmons romero jordan patterson alexander hamilton
graham reynolds griffin wallace moreno west cole hayes bryant herrera gibson ellis tran medina
aguilar stevens murray ford castro marshall owens harrison fernandez mcdonald woods washington
kennedy wells vargas henry chen freeman webb tucker guzman burns crawford olson simpson porter
hunter gordon mendez silva shaw snyder mason dixon munoz hunt hicks holmes palmer wagner black
robertson boyd rose stone salazar fox warren mills meyer rice schmidt garza daniels ferguson
nichols stephens soto weaver ryan gardner payne grant dunn kelley spencer hawkins arnold pierce
vazquez hansen peters santos hart bradley knight elliott cunningham duncan armstrong hudson
carroll lane riley andrews alvarado ray delgado berry perkins hoffman johnston matthews pena
richards willis carpenter lawrence sandoval kovacs novak horvat nowak larsen berg lindqvist
muller schneider fischer weber becker rossi russo ferrari bianchi costa dubois moreau laurent
fontaine marchetti okafor tanaka sato novotny
""".split()  # noqa: SIM905 - one readable block per list


def _take256(words: list[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for word in words:
        seen.setdefault(word, None)
    out = tuple(seen)[:256]
    if len(out) != 256:  # pragma: no cover - guards the format, checked by tests
        raise RuntimeError(f"vocabulary has {len(out)} unique words, needs 256")
    return out


FIRST_NAMES: tuple[str, ...] = _take256(_FIRST)
LAST_NAMES: tuple[str, ...] = _take256(_LAST)
